"""Pseudo-labels: predict unlabelled photos with the ensemble and keep the confident ones as a
Kaggle-layout folder of extra training data (``rule``: which to keep; ``make``: the folder)."""
