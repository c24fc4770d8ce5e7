"""Static cost figures of layers: multiply-accumulates from blob shapes."""
from __future__ import annotations

import math


def layer_macs(layer, bottom_shapes, top_shapes) -> int:
    """Multiply-accumulates of one forward pass of a weighted layer (0 for the rest).

    Convolution-like and inner-product layers: each output element costs one MAC
    per weight feeding it (weights are (num_output, fan_in...)). Deconvolution
    scatters each input element through (out/group * kh * kw) weights.
    """
    if not layer.blobs or layer.blobs[0].ndim < 2:
        return 0
    w = layer.blobs[0]
    per_row = math.prod(w.shape[1:])
    if layer.type.startswith("Deconvolution"):
        return int(math.prod(bottom_shapes[0]) * per_row)
    if layer.type.startswith(("Convolution", "InnerProduct", "FcRistretto")):
        if layer.type.startswith(("InnerProduct", "FcRistretto")) and layer.param.inner_product_param.transpose:
            per_row = w.shape[0]
        return int(math.prod(top_shapes[0]) * per_row)
    return 0
