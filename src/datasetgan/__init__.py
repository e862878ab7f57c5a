"""DatasetGAN: a labelled-data factory built on a pretrained image generator."""

__version__ = "0.1.0"
