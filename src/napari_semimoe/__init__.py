"""napari-semimoe: interactive semi-supervised gland segmentation (Semi-MoE) for histology."""

__version__ = "0.1.0"
