"""One module per stage: ``run(cfg, ...) -> outputs``."""
