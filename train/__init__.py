"""aesipe.train: the training subsystem (stages 1-3, pipeline) behind ``aesipe-train``."""
