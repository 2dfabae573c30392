"""Training: train state, per-family losses, sharding, the train step."""
