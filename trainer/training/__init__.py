"""Training: the step and loop library (no flags), optimizer, checkpoints, outputs and logs."""
