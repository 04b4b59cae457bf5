"""Tests of trainer.modeling: the classifier."""
