"""The data stage and the data every later stage reads: the Kaggle folder layout, image and mask
I/O, validation, preparing a data root (demo, download or links), the demo generator, resizing,
the resized-image cache and the training dataset; its command is ``python -m pipeline.data``."""
