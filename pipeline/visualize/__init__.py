"""The visualize command: mask overlays on photos (``overlay``) and U-Net feature maps
(``features``); ``python -m pipeline.visualize``."""
