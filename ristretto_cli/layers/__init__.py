"""Layer implementations, one module per family, registered by Caffe type name."""
import importlib

from .base import LAYER_TYPES, TEST, TRAIN, Layer, create_layer, register

# Every module that registers layers; importing them fills LAYER_TYPES.
_MODULES = (
    "ristretto_cli.layers.vision",
    "ristretto_cli.layers.inner_product",
    "ristretto_cli.layers.activations",
    "ristretto_cli.layers.losses",
    "ristretto_cli.layers.structure",
    "ristretto_cli.layers.normalization",
    "ristretto_cli.layers.inputs",
    "ristretto_cli.data.layers",
    "ristretto_cli.layers.ristretto",
    "ristretto_cli.layers.extra",
)
_loaded = False


def load_all() -> None:
    global _loaded
    if _loaded:
        return
    for mod in _MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:  # a real import error inside the module
                raise
    _loaded = True


__all__ = ["LAYER_TYPES", "Layer", "TEST", "TRAIN", "create_layer", "load_all", "register"]
