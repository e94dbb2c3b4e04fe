"""Training: one engine for the proxy and for final training, its data pipeline, checkpoints and weights files."""
