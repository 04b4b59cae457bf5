"""The preflight's checks of a node before a long run (`python -m trainer.preflight`)."""
