"""Distributed BiLSTM sentiment classifier for IMDB reviews, trained with TensorFlow."""
