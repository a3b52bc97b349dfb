"""What the tests share and how the suite is wired, kept out of the test modules: helpers.py (models, runs of
training, tensors), dataset_files.py (the digits as webdataset shards and parquet files), runs.py (the run
folders several tests read, made once), upstream.py (timm's own model tests), slow.py (the slow marker),
inductor_cache.py (torch.compile's cache per CPU capability)."""
