"""Tests of trainer.training: steps, optimizer, the loop, checkpoints, faults."""
