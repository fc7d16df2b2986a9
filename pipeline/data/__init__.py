"""Carvana data: the Kaggle folder layout, image and mask I/O, validation, the demo generator,
and the torch datasets used for training and prediction."""
