"""Kaggle submission files: the format and its validator (``format``), resumable shards and
their merge (``shards``), and predicting the test set into a file (``make``)."""
