"""Serving: the export on raw text, predictions, and promotion to production."""
