"""The model registry: uploaded model files, served without code, with versions."""
