"""Data: IMDB sources -> tokenizer + vocabulary -> sharded TFRecords -> the tf.data pipeline."""
