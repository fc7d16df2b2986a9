"""Pictures of what a model does: mask overlays on photos (``overlay``) and U-Net feature maps
(``features``)."""
