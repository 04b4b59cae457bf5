"""Training: the model, the step and loop library (no flags), checkpoints and outputs."""
