"""Tests of trainer/diagnostics/ and python -m trainer.preflight."""
