"""The packages import one way: net -> layers -> {data, formats} (never back)."""
from __future__ import annotations

import subprocess
import sys

import pytest

# (package imported, packages it must not pull in)
RULES = [
    ("ristretto_cli.data", ("ristretto_cli.layers", "ristretto_cli.net")),
    ("ristretto_cli.data.sources", ("ristretto_cli.layers", "ristretto_cli.net")),
    ("ristretto_cli.formats", ("ristretto_cli.layers", "ristretto_cli.net", "ristretto_cli.data")),
    ("ristretto_cli.layers", ("ristretto_cli.net", "ristretto_cli.quantize", "ristretto_cli.solvers",
                              "ristretto_cli.commands")),
    ("ristretto_cli.net", ("ristretto_cli.quantize", "ristretto_cli.solvers", "ristretto_cli.commands")),
]


@pytest.mark.parametrize("module,forbidden", RULES, ids=[r[0] for r in RULES])
def test_importing_a_package_pulls_in_only_what_it_may_import(module, forbidden):
    code = (f"import sys, {module}\n"
            f"bad = sorted(m for m in sys.modules if m.startswith({forbidden!r}))\n"
            f"print(' '.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [], f"importing {module} imports {out}"


def test_importing_the_layers_package_registers_every_layer_module():
    from ristretto_cli.layers import LAYER_TYPES

    for name in ("Convolution", "InnerProduct", "Data", "ImageData", "ConvolutionRistretto", "FcRistretto",
                 "DeconvolutionRistretto", "LRNRistretto"):
        assert name in LAYER_TYPES
    for name, cls in LAYER_TYPES.items():  # one naming rule: the Caffe type name, no suffix
        assert cls.__name__ in cls.type_names, (name, cls.__name__)
