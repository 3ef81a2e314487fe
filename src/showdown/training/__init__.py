"""Training: the loop, checkpoints, freeze plans and the batches it consumes."""
