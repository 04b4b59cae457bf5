"""The model: BiLSTM/BiGRU classifier layers and per-example dropout noise (training and serving)."""
