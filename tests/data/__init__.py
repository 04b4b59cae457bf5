"""Tests of trainer.data: sources, tokenizer, prepare and the input pipeline."""
