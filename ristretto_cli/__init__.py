"""ristretto: Caffe-compatible simulation and search of reduced-precision CNN arithmetic."""

__version__ = "0.1.0"
