"""A trained model on disk, and loading it back.

folder.py: a run folder's file names and what is read from it; model_folder.py: the one writer of a timm
model folder (config.json and model.safetensors), for the run folder and the Hub export; files.py: files
written whole or not at all; weights.py: a checkpoint's entries and the choice of EMA or raw weights;
load.py: a trained model from any source (a run folder, a checkpoint, 'hf-hub:' or 'local-dir:').
"""
