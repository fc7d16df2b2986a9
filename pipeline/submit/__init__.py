"""The submit stage: the Kaggle CSV format and its validator (``format``), resumable shards and
their merge (``shards``), and predicting the test set into a file (``make``); its command is
``python -m pipeline.submit``."""
