"""Configuration: one typed RunConfig and the presets that fill it. The bottom layer: imports no other part."""
