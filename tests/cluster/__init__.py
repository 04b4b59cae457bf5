"""Tests of trainer.cluster: cluster descriptions, peers, strategy, GPUs."""
