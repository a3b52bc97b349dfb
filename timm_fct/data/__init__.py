"""Datasets and their transforms, and training's two input pipelines.

datasets.py and schemes.py: the embedded digits and every timm dataset scheme; transforms.py: the images'
geometry and augmentation; loaders.py: training's pipelines, the data on the device (tensor_loader.py) or a
DataLoader over PIL images. The report reads the datasets and the evaluation transform, not the pipelines.
"""
