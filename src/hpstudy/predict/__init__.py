"""Predicting with a saved model: the model file, what its metadata must be, image decoding."""
