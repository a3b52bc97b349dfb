"""Getting a trained model out: the Hub (export, model card, push) and ONNX."""
