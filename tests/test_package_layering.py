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


# What each subpackage may import (its __init__ docstring says the same); a new arrow
# is a design decision, made here on purpose, not by accident in a module.
MAY_IMPORT = {
    "backend": {"errors"},
    "caffe": {"errors", "proto"},
    "data": {"caffe", "errors", "progress", "proto"},
    "formats": {"backend", "errors", "kernels", "proto"},  # kernels: trim.cu for CuPy arrays
    "layers": {"backend", "caffe", "errors", "data", "formats", "proto"},  # caffe: InfogainLoss's H file
    "net": {"backend", "caffe", "errors", "layers", "proto"},
    "quantize": {"backend", "caffe", "cost", "errors", "formats", "layers", "net", "progress", "proto"},
    "cost": {"caffe", "errors", "formats", "layers"},
    "report": {"caffe", "cost", "errors", "quantize"},
    "solvers": {"backend", "caffe", "errors", "net", "progress", "proto"},
    "demo": {"data", "errors", "net", "quantize", "solvers"},
    "pycaffe": {"backend", "caffe", "errors", "layers", "net", "proto", "solvers"},
    "export": {"backend", "caffe", "errors", "formats", "layers", "net", "proto"},
    "proto": set(),
    "kernels": set(),
    "progress": set(),
    "errors": set(),
}


def test_each_package_imports_only_what_its_docstring_allows():
    from test_install import imports_of, package_modules

    def part(module):
        return module.split(".")[1] if "." in module else module

    modules = package_modules()
    extra = {}
    for module, path in modules.items():
        src = part(module)
        if src not in MAY_IMPORT:
            continue  # commands, cli: may import anything
        for dep in imports_of(module, path, modules):
            dst = part(dep)
            if dst != src and dst != "ristretto_cli" and dst not in MAY_IMPORT[src]:
                extra.setdefault(f"{src} -> {dst}", []).append(module)
    assert not extra, f"imports outside the allowed table: {extra}"
