"""The run folder format, the timm model folder writer, and loading a trained model from any source."""
