"""The vision layers: Convolution, Deconvolution, Pooling, LRN (one module each).

Importing this module registers all four; the implementations live in
:mod:`.conv`, :mod:`.pooling` and :mod:`.lrn`, with im2col/col2im in :mod:`.im2col`.
"""
from .conv import ConvolutionLayer, DeconvolutionLayer
from .lrn import LRNLayer
from .pooling import PoolingLayer

__all__ = ["ConvolutionLayer", "DeconvolutionLayer", "LRNLayer", "PoolingLayer"]
