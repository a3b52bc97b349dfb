"""Datasets, their transforms, and the two input pipelines train.py and the report use."""
