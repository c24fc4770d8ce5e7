"""The library never prints: importing it is silent, its procedures report through
callbacks and logging, and only the command line (cli.py, commands/) draws."""
from __future__ import annotations

import ast
import json
import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli
from test_quantize import TINY_BATCHES, tiny  # noqa: F401  (the tiny net fixture)

PACKAGE = Path(__file__).resolve().parents[1] / "ristretto_cli"
TERMINAL_MODULES = {"rich", "click"}


def test_importing_the_library_prints_nothing():
    code = ("import ristretto_cli.quantize, ristretto_cli.net, ristretto_cli.solvers, ristretto_cli.data, "
            "ristretto_cli.formats, ristretto_cli.layers, ristretto_cli.quantize.procedure, "
            "ristretto_cli.solvers.solver, ristretto_cli.data.converters, ristretto_cli.demo")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""


def _imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            yield ("." * node.level) + module
            for alias in node.names:  # `from ..commands import ui`
                yield ("." * node.level) + (module + "." if module else "") + alias.name


def test_only_the_command_line_imports_terminal_modules():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "commands" or rel.as_posix() == "cli.py":
            continue
        for name in _imports(ast.parse(path.read_text(), str(path))):
            parts = name.lstrip(".").split(".")
            if parts[0] in TERMINAL_MODULES or "commands" in parts or parts[-1] == "ui":
                offenders.append(f"{rel}: {name}")
    assert offenders == []


@pytest.fixture
def library_only(monkeypatch):
    """The library as an importer sees it: without the handler a command line run in this
    process installed for the library's warnings."""
    logger = logging.getLogger("ristretto_cli")
    monkeypatch.setattr(logger, "handlers", [h for h in logger.handlers if isinstance(h, logging.NullHandler)])


def test_library_quantize_is_silent_and_returns_the_outcome(tiny, capfd, library_only):  # noqa: F811
    from ristretto_cli.quantize.procedure import QuantizeOutcome, quantize

    model, weights, d = tiny
    out = d / "silent.prototxt"
    outcome = quantize(model, weights, str(out), "dynamic_fixed_point")
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""
    assert isinstance(outcome, QuantizeOutcome) and outcome.model_quantized == str(out) and out.exists()
    assert outcome.report["iterations"] == 50 and outcome.report["error_margin"] == 2.0
    assert outcome.counters.layer_forwards == outcome.report["layer_forwards"]
    assert set(outcome.result.chosen) == {"conv_params", "fc_params", "activations"}


def test_library_quantize_reports_progress_through_the_callback(tiny):  # noqa: F811
    from ristretto_cli.quantize.procedure import QuantizeSettings, quantize

    model, weights, d = tiny
    calls = []
    outcome = quantize(model, weights, str(d / "progress.prototxt"), "integer_power_of_2_weights",
                       QuantizeSettings(iterations=TINY_BATCHES), on_progress=lambda *a: calls.append(a))
    total = calls[0][1]
    assert calls[0] == (0, total, None) and total == 2 * TINY_BATCHES + 10
    assert [c[0] for c in calls] == list(range(len(calls)))     # one batch at a time
    assert calls[-1][0] == total and outcome.report["iterations"] == TINY_BATCHES


def test_the_keyword_form_and_the_settings_agree(tiny):  # noqa: F811
    from ristretto_cli.quantize.procedure import QuantizeSettings, quantize

    model, weights, d = tiny
    a = quantize(model, weights, str(d / "kw.prototxt"), "minifloat", iterations=TINY_BATCHES, widths=[16, 8])
    b = quantize(model, weights, str(d / "st.prototxt"), "minifloat", QuantizeSettings(iterations=TINY_BATCHES,
                                                                                       widths=[16, 8]))
    assert a.result.chosen == b.result.chosen and a.report["candidates"] == b.report["candidates"]
    assert (d / "kw.prototxt").read_text() == (d / "st.prototxt").read_text()
    with pytest.raises(TypeError):
        quantize(model, weights, str(d / "x.prototxt"), "minifloat", show=False)


def test_the_command_line_draws_what_the_library_returns(tiny, capsys):  # noqa: F811
    model, weights, d = tiny
    status, out, err = run_cli(["quantize", "--model", model, "--weights", weights, "--model_quantized",
                                d / "cli.prototxt", "--trimming_mode", "dynamic_fixed_point", "--iterations",
                                TINY_BATCHES, "--report", "-"], capsys)
    assert status == 0, err
    report = json.loads(out)  # stdout holds nothing but the JSON; the tables go to stderr
    assert "baseline 32-bit float" in err and f"wrote {d / 'cli.prototxt'}; layer forwards" in err
    assert report["model_quantized"] == str(d / "cli.prototxt")


def test_the_command_line_shows_the_librarys_warnings(tiny, capsys):  # noqa: F811
    model, weights, d = tiny
    renamed = d / "renamed.prototxt"
    renamed.write_text(Path(model).read_text().replace('name: "conv1"', 'name: "other1"')
                       .replace('name: "ip1"', 'name: "other2"'))
    status, out, err = run_cli(["info", "-m", renamed, "-w", weights], capsys)
    assert status == 0, err
    assert f"warning: no layer of {weights} matches a layer name of {renamed}; the weights are the fillers'\n" \
        in err


def test_load_net_logs_instead_of_printing(tiny, capfd, caplog, library_only):  # noqa: F811
    from ristretto_cli.net.loading import load_net

    model, weights, d = tiny
    renamed = d / "renamed_lib.prototxt"
    renamed.write_text(Path(model).read_text().replace('name: "conv1"', 'name: "other1"')
                       .replace('name: "ip1"', 'name: "other2"'))
    net = load_net(str(renamed), weights, "TEST")
    for layer in net.layers:
        if hasattr(layer, "close"):
            layer.close()
    assert capfd.readouterr() == ("", "")
    assert any(r.levelname == "WARNING" and "no layer of" in r.getMessage() for r in caplog.records)


def test_signal_handlers_installed_before_come_back():
    from ristretto_cli.solvers.signals import handle_signals

    class Requests:
        stopped = snapshots = 0

        def request_stop(self, reason):
            self.stopped += 1

        def request_snapshot(self):
            self.snapshots += 1

    def mine(signum, frame):  # pragma: no cover - never called
        pass

    before = signal.signal(signal.SIGINT, mine)
    try:
        r = Requests()
        with handle_signals(r):
            assert signal.getsignal(signal.SIGINT) is not mine
            signal.raise_signal(signal.SIGINT)
        assert r.stopped == 1 and signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, before)
