"""Tests of trainer.retraining: the scheduled job and its data gate."""
