"""Configuration: one typed RunConfig, declared option by option (options.py), and the presets that fill it. The
bottom layer: imports no other part."""
