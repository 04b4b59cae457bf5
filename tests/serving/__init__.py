"""Tests of trainer.serving: export, predict, promotion and its statistics."""
