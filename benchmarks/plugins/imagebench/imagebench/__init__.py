"""imagebench: a small CNN classifying 224x224 images (see imagebench.api and imagebench.net)."""
