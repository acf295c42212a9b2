"""segdesk: label 2D medical images with a U-Net that learns while you label."""

__version__ = "0.1.0"
