"""Predicting with a saved model: the model file and image decoding."""
