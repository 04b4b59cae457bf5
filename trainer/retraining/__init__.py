"""Scheduled retraining: prepare if needed, gate the data, train, promote; above training and serving."""
