"""carvana-pipeline: binary car segmentation for the Kaggle Carvana Image Masking Challenge."""

import os

# albumentations 2.x asks PyPI for a newer version on import; a pipeline must not touch the
# network unasked, so this is off before any module imports albumentations.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
