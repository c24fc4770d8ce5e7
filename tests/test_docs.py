"""The API reference builds from the docstrings (``make docs``: pdoc) without a warning."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_make_docs_builds_the_api_reference_without_warnings(tmp_path):
    pytest.importorskip("pdoc")
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = tmp_path / "api"
    done = subprocess.run(["make", "-s", "docs", f"DOCS_OUT={out}", f"PYTHON={sys.executable}"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr            # pdoc writes its warnings to stderr
    assert "warn" not in done.stdout.lower(), done.stdout
    pages = {p.relative_to(out).as_posix() for p in out.rglob("*.html")}
    for page in ("ristretto_cli.html", "ristretto_cli/api.html", "ristretto_cli/pycaffe.html",
                 "ristretto_cli/pycaffe/io.html", "ristretto_cli/quantize/procedure.html", "ristretto_cli/formats.html"):
        assert page in pages, sorted(pages)
    api = (out / "ristretto_cli" / "api.html").read_text()
    for name in ("benchmark", "quantize", "finetune", "forward", "load_net", "trim_fixed_point", "trim_minifloat",
                 "trim_power_of_two"):
        assert f'id="{name}"' in api, name
