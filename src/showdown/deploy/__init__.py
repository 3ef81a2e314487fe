"""Using a trained model: predict and export (ONNX, TorchScript, TFLite). Depends on models and data only."""
