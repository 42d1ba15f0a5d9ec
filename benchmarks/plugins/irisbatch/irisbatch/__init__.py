"""irisbatch: irisbench plus predict_batch() (see irisbatch.api)."""
