"""ristretto: Caffe-compatible simulation and search of reduced-precision CNN arithmetic."""

import logging

__version__ = "0.1.0"

# The library reports through logging (and callbacks) and never prints: without a handler
# of the caller's, its warnings go nowhere (not to Python's last-resort stderr handler).
logging.getLogger(__name__).addHandler(logging.NullHandler())
