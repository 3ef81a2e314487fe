"""Models: backbones (timm, TFLite and Keras weights), the classifier around them, the small CNN, saving."""
