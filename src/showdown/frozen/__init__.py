"""The frozen part: engines that run frozen layers (PyTorch, ONNX Runtime), the feature cache and the
boundary split."""
