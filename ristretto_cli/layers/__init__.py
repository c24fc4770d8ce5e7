"""Layers: one module per family, each class registered under its Caffe type name.

What lives here: the ``Layer`` contract and the registry (:mod:`.base`), the float
layers of Caffe 1.0 (conv, inner_product, pooling, lrn, activations, losses,
structure, normalization, inputs), the Data / ImageData layers (:mod:`.data`), the
Ristretto layers (:mod:`.ristretto`, the float layers with reduced-precision trims)
and their arithmetic helpers (im2col, fillers).

Naming rule: a registered layer class is named by its Caffe type name, without a
``Layer`` suffix (``Convolution``, ``InnerProduct``, ``Data``, ``ConvolutionRistretto``).
Unregistered helper bases are private (``_ConvBase``) or keep the name of Caffe's own
base class (``NeuronLayer``).

What it may import: ``errors``, ``proto``, ``backend``, ``formats`` (number formats for
the Ristretto layers), ``data`` (record reading and transforms for the Data
layers) and ``caffe`` (a BlobProto file a layer names in its parameters: InfogainLoss's
``infogain_loss_param.source``). Nothing under ``data``, ``formats`` or ``proto`` imports this package, and
``net`` builds on it, not the other way round.

The registry is this plain table of imports: importing the package registers every
type, so ``create_layer`` finds them all.
"""
from .base import LAYER_TYPES, TEST, TRAIN, Layer, create_layer, register

# The table of layer modules; importing each registers its types in LAYER_TYPES.
from . import activations, conv, data, extra, inner_product, inputs, losses, lrn, normalization, pooling, structure  # noqa: E402,F401,I001
from . import ristretto  # noqa: E402,F401  (after the float layers it subclasses)

__all__ = ["LAYER_TYPES", "Layer", "TEST", "TRAIN", "create_layer", "register"]
