"""Bad input, every command (DESIGN §7): one line `ristretto: error: ...` that names the file and
the place (line:column, layer, blob), exit status 2, no traceback (`--debug` shows it), and
nothing half-written: outputs appear whole or not at all, inputs are never replaced.

Most cases run in-process through `cli.main`; a few run the real program in a subprocess to
see exactly what a user sees on stderr.
"""
from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from ristretto_cli.data.lmdb_io import make_datum, write_datums

from conftest import REPO
from conftest import run_cli as run

GOOD_NET = '''name: "good"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 1 dim: 6 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
'''

DATA_NET = '''name: "datanet"
layer {{ name: "data" type: "Data" top: "data" top: "label"
        transform_param {{ scale: 0.00390625 }}
        data_param {{ source: "{db}" batch_size: 2 backend: LMDB }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param {{ num_output: 3 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy" include {{ phase: TEST }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
'''

SOLVER = '''net: "{net}"
base_lr: 0.01
lr_policy: "fixed"
max_iter: 2
snapshot_prefix: "{prefix}"
'''

# line 3, column 42: a field LayerParameter does not have
MALFORMED = '''name: "bad"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 } } bogus_field: 3 }
'''


def _write(path, text):
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def f(tmp_path_factory):
    """Every kind of good and bad input file, made once."""
    d = tmp_path_factory.mktemp("bad_input")
    rng = np.random.default_rng(0)
    write_datums(str(d / "db"), [(f"{i:08d}", make_datum(rng.integers(0, 256, (1, 3, 3), dtype=np.uint8), i % 3))
                                 for i in range(6)])
    write_datums(str(d / "empty_db"), [])
    ns = SimpleNamespace(dir=d)
    ns.db, ns.empty_db, ns.missing_db = str(d / "db"), str(d / "empty_db"), str(d / "missing_db")
    ns.good = _write(d / "good.prototxt", GOOD_NET)
    ns.data = _write(d / "data.prototxt", DATA_NET.format(db=ns.db))
    ns.data_empty = _write(d / "data_empty.prototxt", DATA_NET.format(db=ns.empty_db))
    ns.data_missing = _write(d / "data_missing.prototxt", DATA_NET.format(db=ns.missing_db))
    ns.malformed = _write(d / "malformed.prototxt", MALFORMED)
    ns.unterminated = _write(d / "unterminated.prototxt", 'layer { name: "a" type: "Input" top: "a"\n')
    ns.unknown = _write(d / "unknown.prototxt", GOOD_NET.replace('type: "InnerProduct"', 'type: "Frobnicate"'))
    ns.wider = _write(d / "wider.prototxt", GOOD_NET.replace("num_output: 3", "num_output: 5"))
    ns.data_wider = _write(d / "data_wider.prototxt", DATA_NET.format(db=ns.db).replace("num_output: 3",
                                                                                         "num_output: 7"))
    ns.empty_net = _write(d / "empty.prototxt", "# nothing here\n")
    ns.missing = str(d / "missing.prototxt")
    for name in ("good", "data"):
        out = d / f"{name}.caffemodel"
        run(["init", "-m", getattr(ns, name), "-o", out, "--seed", "1"])
        setattr(ns, f"{name}_w", str(out))
    blob = (d / "good.caffemodel").read_bytes()
    (d / "truncated.caffemodel").write_bytes(blob[: len(blob) // 2])
    ns.truncated = str(d / "truncated.caffemodel")
    import zlib
    png = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(13) + zlib.crc32(b"IHDR").to_bytes(4, "big")
    (d / "picture.png").write_bytes(png)
    ns.png = str(d / "picture.png")
    ns.text = _write(d / "notes.txt", "these are not weights\n")
    x = np.zeros((2, 1, 6, 6), np.float32)
    np.save(d / "x.npy", x)
    np.save(d / "x_wrong.npy", np.zeros((2, 1, 5, 5), np.float32))
    np.save(d / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(d / "arrays.npz", data=x)
    ns.x, ns.x_wrong, ns.objects, ns.npz = (str(d / n) for n in ("x.npy", "x_wrong.npy", "objects.npy", "arrays.npz"))
    ns.nodir = str(d / "no_such_folder")
    (d / "snapshots").mkdir()
    ns.solver = _write(d / "solver.prototxt", SOLVER.format(net=ns.data, prefix=d / "snapshots" / "s"))
    ns.solver_malformed = _write(d / "solver_malformed.prototxt", "base_lr: 0.1\nmax_iter 2 3\n")
    ns.solver_bad_net = _write(d / "solver_bad_net.prototxt", SOLVER.format(net=ns.malformed, prefix=d / "s"))
    ns.solver_unknown = _write(d / "solver_unknown.prototxt", SOLVER.format(net=ns.unknown, prefix=d / "s"))
    ns.solver_missing_db = _write(d / "solver_missing_db.prototxt", SOLVER.format(net=ns.data_missing, prefix=d / "s"))
    ns.solver_empty_db = _write(d / "solver_empty_db.prototxt", SOLVER.format(net=ns.data_empty, prefix=d / "s"))
    ns.solver_nodir = _write(d / "solver_nodir.prototxt", SOLVER.format(net=ns.data, prefix=f"{ns.nodir}/s"))
    return ns


def assert_one_line_error(code, err, *parts):
    err = err.strip()
    assert code == 2, err
    assert "Traceback" not in err
    assert "\n" not in err, err
    assert err.startswith("ristretto: error: "), err
    for p in parts:
        assert str(p) in err, f"{p!r} not in {err!r}"


def run_error(args, capsys, *parts):
    code = run(args)
    out, err = capsys.readouterr()
    assert_one_line_error(code, err, *parts)
    return err


def q_args(f, model, weights, out=None):
    return ["quantize", "-m", model, "-w", weights, "--model-quantized", out or f.dir / "q.prototxt",
            "--trimming-mode", "dynamic_fixed_point", "-i", "1"]


# --------------------------------------------------------------------------- prototxt faults

RUN_COMMANDS = {
    "benchmark": lambda f, m: ["benchmark", "-m", m, "-i", "1"],
    "test": lambda f, m: ["test", "-m", m, "-i", "1"],
    "forward": lambda f, m: ["forward", "-m", m, "--input", f"data={f.x}", "-o", f.dir / "fwd.npz"],
    "init": lambda f, m: ["init", "-m", m, "-o", f.dir / "init.caffemodel"],
    "info": lambda f, m: ["info", "-m", m],
    "time": lambda f, m: ["time", "-m", m, "-i", "1"],
    "quantize": lambda f, m: q_args(f, m, f.data_w),
}


@pytest.mark.parametrize("command", sorted(RUN_COMMANDS))
def test_malformed_prototxt_names_file_line_and_column(f, capsys, command):
    run_error(RUN_COMMANDS[command](f, f.malformed), capsys, f"{f.malformed}:3:42:", "bogus_field")
    # the file ends inside a layer: protobuf points at the last token read ("a", column 38)
    run_error(RUN_COMMANDS[command](f, f.unterminated), capsys, f"{f.unterminated}:1:38:", 'Expected "}"')
    assert not (f.dir / "fwd.npz").exists() and not (f.dir / "init.caffemodel").exists()
    assert not (f.dir / "q.prototxt").exists()


@pytest.mark.parametrize("command", sorted(RUN_COMMANDS))
def test_missing_prototxt(f, capsys, command):
    run_error(RUN_COMMANDS[command](f, f.missing), capsys, f"{f.missing}: no such file")


@pytest.mark.parametrize("command", sorted(RUN_COMMANDS))
def test_unknown_layer_type_lists_the_supported_ones(f, capsys, command):
    err = run_error(RUN_COMMANDS[command](f, f.unknown), capsys, f.unknown, "layer 'ip'", "'Frobnicate'",
                    "supported types")
    assert "Convolution" in err and "InnerProduct" in err and "SoftmaxWithLoss" in err


@pytest.mark.parametrize("command", ["benchmark", "info", "init"])
def test_a_file_without_layers_is_refused(f, capsys, command):
    run_error(RUN_COMMANDS[command](f, f.empty_net), capsys, f"{f.empty_net}: no layers")


def test_solver_and_its_net_errors_name_their_files(f, capsys):
    run_error(["finetune", "--solver", f.solver_malformed], capsys, f"{f.solver_malformed}:2:10:", 'Expected ":"')
    run_error(["finetune", "--solver", f.solver_bad_net], capsys, f"{f.malformed}:3:42:")
    run_error(["train", "--solver", f.solver_unknown], capsys, f.unknown, "'Frobnicate'", "supported types")
    run_error(["finetune", "--solver", f.missing], capsys, f"{f.missing}: no such file")


# --------------------------------------------------------------------------- caffemodel faults

WEIGHT_COMMANDS = {
    "benchmark": lambda f, m, w: ["benchmark", "-m", m, "-w", w, "-i", "1"],
    "forward": lambda f, m, w: ["forward", "-m", m, "-w", w, "--input", f"data={f.x}", "-o", f.dir / "fwd.npz"],
    "info": lambda f, m, w: ["info", "-m", m, "-w", w],
    "time": lambda f, m, w: ["time", "-m", m, "-w", w, "-i", "1"],
    "quantize": lambda f, m, w: q_args(f, m, w),
    "finetune": lambda f, m, w: ["finetune", "--solver", f.solver, "--weights", w],
}


@pytest.mark.parametrize("command", sorted(WEIGHT_COMMANDS))
def test_truncated_and_foreign_caffemodels(f, capsys, command):
    model = f.data if command in ("quantize", "finetune") else f.good
    make = WEIGHT_COMMANDS[command]
    run_error(make(f, model, f.truncated), capsys, f"{f.truncated}: truncated")
    run_error(make(f, model, f.png), capsys, f"{f.png}: not a Caffe NetParameter")
    run_error(make(f, model, f.text), capsys, f"{f.text}: not a Caffe NetParameter")
    run_error(make(f, model, f.dir / "nope.caffemodel"), capsys, "nope.caffemodel: no such")
    assert not (f.dir / "fwd.npz").exists() and not (f.dir / "q.prototxt").exists()


@pytest.mark.parametrize("command", sorted(WEIGHT_COMMANDS))
def test_weights_of_another_shape_name_layer_and_both_shapes(f, capsys, command):
    make = WEIGHT_COMMANDS[command]
    if command == "finetune":  # the solver's net is wider than the weights
        solver = _write(f.dir / "solver_wider.prototxt", SOLVER.format(net=f.data_wider, prefix=f.dir / "s"))
        run_error(["finetune", "--solver", solver, "-w", f.data_w], capsys, f.data_w, "layer 'ip'", "(3, 9)",
                  "(7, 9)")
    elif command == "quantize":
        run_error(make(f, f.data_wider, f.data_w), capsys, f.data_w, "layer 'ip'", "(3, 9)", "(7, 9)")
    else:
        run_error(make(f, f.wider, f.good_w), capsys, f.good_w, "layer 'conv'", "(3, 1, 3, 3)", "(5, 1, 3, 3)")


# --------------------------------------------------------------------------- LMDB faults

LMDB_COMMANDS = {
    "benchmark": lambda f, m, s: ["benchmark", "-m", m, "-i", "1"],
    "time": lambda f, m, s: ["time", "-m", m, "-i", "1"],
    "info": lambda f, m, s: ["info", "-m", m],
    "quantize": lambda f, m, s: q_args(f, m, f.data_w),
    "finetune": lambda f, m, s: ["finetune", "--solver", s],
}


@pytest.mark.parametrize("command", sorted(LMDB_COMMANDS))
def test_missing_and_empty_lmdb(f, capsys, command):
    make = LMDB_COMMANDS[command]
    run_error(make(f, f.data_missing, f.solver_missing_db), capsys, f.data_missing, "layer 'data'",
              f"no such LMDB: {f.missing_db}")
    run_error(make(f, f.data_empty, f.solver_empty_db), capsys, f.data_empty, "layer 'data'",
              f"LMDB is empty: {f.empty_db}")


def test_compute_mean_bad_databases_and_outputs(f, capsys):
    out = f.dir / "mean.binaryproto"
    run_error(["compute-mean", f.missing_db, out], capsys, f"no such LMDB: {f.missing_db}")
    run_error(["compute-mean", f.empty_db, out], capsys, f"LMDB is empty: {f.empty_db}")
    run_error(["compute-mean", f.good, out], capsys, f.good, "cannot open LMDB")
    run_error(["compute-mean", f.db, f.db], capsys, f"'{f.db}' is a directory")
    run_error(["compute-mean", f.db, f"{f.nodir}/mean.binaryproto"], capsys, "cannot write", f.nodir)
    assert not out.exists() and not os.path.exists(f.nodir)


def test_convert_bad_inputs(f, capsys):
    out = f.dir / "out_db"
    run_error(["convert", "mnist", f.png, f.text, out], capsys, f"{f.png}: not an IDX file")
    run_error(["convert", "mnist", f.missing, f.text, out], capsys, f"{f.missing}: no such file")
    run_error(["convert", "cifar10", f.png, out], capsys, f.png, "not a multiple of 3073")
    run_error(["convert", "imageset", f.dir, f.missing, out], capsys, f.missing)
    run_error(["convert", "imagefolder", f.nodir, out], capsys, f.nodir)
    run_error(["convert", "cifar10", f.png, f.db], capsys, f"{f.db}: already exists")  # and is left alone
    assert not out.exists()


# --------------------------------------------------------------------------- outputs

def test_unwritable_outputs_fail_before_any_work_and_leave_nothing(f, capsys):
    nodir = f.nodir
    cases = [
        (["forward", "-m", f.good, "--input", f"data={f.x}", "-o", f"{nodir}/o.npz"], "--output"),
        (["init", "-m", f.good, "-o", f"{nodir}/w.caffemodel"], "--output"),
        (["benchmark", "-m", f.data, "-w", f.data_w, "-i", "1", "--json", f"{nodir}/s.json"], "--json"),
        (q_args(f, f.data, f.data_w, f"{nodir}/q.prototxt"), "--model-quantized"),
        (q_args(f, f.data, f.data_w) + ["--report", f"{nodir}/r.json"], "--report"),
    ]
    for args, option in cases:
        err = run_error(args, capsys, f"{nodir}/", "cannot write", option)
        assert "does not exist" in err
    run_error(["finetune", "--solver", f.solver_nodir], capsys, f.solver_nodir, "cannot write snapshots")
    run_error(["forward", "-m", f.good, "--input", f"data={f.x}", "-o", f.dir], capsys)  # a folder
    assert not os.path.exists(nodir) and not (f.dir / "q.prototxt").exists()


def test_outputs_never_replace_inputs(f, capsys):
    before = {p: open(p, "rb").read() for p in (f.good, f.good_w, f.x, f.data, f.data_w)}
    run_error(["init", "-m", f.good, "-o", f.good], capsys, "would overwrite the input")
    run_error(["forward", "-m", f.good, "-w", f.good_w, "--input", f"data={f.x}", "-o", f.x], capsys,
              "would overwrite the input")
    run_error(["forward", "-m", f.good, "-w", f.good_w, "--input", f"data={f.x}", "-o", f.good_w], capsys,
              "would overwrite the input")
    run_error(["benchmark", "-m", f.data, "-i", "1", "--json", f.data], capsys, "would overwrite the input")
    run_error(q_args(f, f.data, f.data_w, f.data_w), capsys, "would overwrite the input")
    run_error(q_args(f, f.data, f.data_w) + ["--report", f.data_w], capsys, "would overwrite the input")
    assert before == {p: open(p, "rb").read() for p in before}


def test_a_failed_run_leaves_an_existing_output_as_it_was(f, tmp_path, capsys):
    out = tmp_path / "w.caffemodel"
    out.write_bytes(b"previous")
    # --filler bilinear fails on the InnerProduct layer after the net was built
    run_error(["init", "-m", f.good, "-o", out, "--filler", "bilinear"], capsys, f.good, "layer 'ip'",
              "bilinear", "4-D")
    assert out.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["w.caffemodel"]


def test_a_write_that_fails_midway_leaves_no_file(f, tmp_path, capsys, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    out = tmp_path / "o.npz"
    run_error(["forward", "-m", f.good, "--input", f"data={f.x}", "-o", out], capsys, str(out),
              "No space left on device")
    run_error(["init", "-m", f.good, "-o", tmp_path / "w.caffemodel"], capsys, "No space left on device")
    assert os.listdir(tmp_path) == []  # no temporary file left behind


# --------------------------------------------------------------------------- forward inputs

@pytest.mark.parametrize("spec, parts", [
    ("data={x_wrong}", ["--input data=", "x_wrong.npy", "shape (2, 1, 5, 5)", "blob 'data'", "(2, 1, 6, 6)"]),
    ("data", ["--input 'data'", "expected BLOB=FILE.npy"]),
    ("={x}", ["expected BLOB=FILE.npy"]),
    ("data=", ["expected BLOB=FILE.npy"]),
    ("conv={x}", ["no input blob 'conv'", "its inputs are data"]),
    ("data={objects}", ["objects.npy", "Python objects", "never loaded"]),
    ("data={npz}", ["arrays.npz", "an .npz archive, not a .npy array"]),
    ("data={text}", ["notes.txt", "not a .npy file"]),
    ("data={missing}", ["missing.prototxt: no such file"]),
])
def test_forward_bad_inputs(f, capsys, spec, parts):
    spec = spec.format(**vars(f))
    run_error(["forward", "-m", f.good, "--input", spec, "-o", f.dir / "fwd.npz"], capsys, *parts)
    assert not (f.dir / "fwd.npz").exists()


def test_forward_must_feed_every_top_of_a_data_layer(f, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 3, 3), np.float32))
    run_error(["forward", "-m", f.data, "--input", f"data={tmp_path / 'x.npy'}", "-o", tmp_path / "o.npz"],
              capsys, "layer 'data'", "feed label too")
    assert not (tmp_path / "o.npz").exists()


def test_truncated_npy(f, tmp_path, capsys):
    p = tmp_path / "cut.npy"
    p.write_bytes(open(f.x, "rb").read()[:140])
    run_error(["forward", "-m", f.good, "--input", f"data={p}", "-o", tmp_path / "o.npz"], capsys, str(p),
              "not a readable .npy array")


# --------------------------------------------------------------------------- click usage errors

@pytest.mark.parametrize("args, parts", [
    (["info"], ["info: Missing option '--model'", "see 'ristretto info --help'"]),
    (["info", "-m", "x", "--bogus"], ["info: No such option '--bogus'", "see 'ristretto info --help'"]),
    (["frobnicate"], ["No such command 'frobnicate'", "see 'ristretto --help'"]),
    (["info", "-m", "x", "--phase", "LATER"], ["info: Invalid value for '--phase'", "'LATER'"]),
    (["benchmark", "-m", "x", "-i", "0"], ["benchmark: Invalid value for '--iterations'", "0"]),
    (["convert", "mnist", "a"], ["convert mnist: Missing argument 'LABELS'", "see 'ristretto convert mnist --help'"]),
    (["init", "-m", "x", "-o", "y", "--filler", "zero"], ["init: Invalid value for '--filler'", "'zero'"]),
    (["quantize", "-m", "x", "-w", "y", "--model_quantized", "z"], ["quantize: Missing option '--trimming-mode'"]),
])
def test_usage_errors_are_one_line_with_status_2(capsys, args, parts):
    run_error(args, capsys, *parts)


# --------------------------------------------------------------------------- the real program

def ristretto(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "ristretto_cli.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=120)


def test_program_stderr_is_exactly_one_line(f):
    for args in (["info", "-m", f.malformed], ["benchmark", "-m", f.good, "-w", f.truncated],
                 ["info", "--bogus"]):
        p = ristretto(*args)
        assert p.returncode == 2 and p.stdout == ""
        assert p.stderr.count("\n") == 1 and p.stderr.startswith("ristretto: error: "), p.stderr


def test_debug_shows_the_traceback_anywhere_on_the_line(f):
    for args in (["--debug", "info", "-m", f.unknown], ["info", "-m", f.unknown, "--debug"]):
        p = ristretto(*args)
        assert p.returncode == 2
        assert "Traceback (most recent call last)" in p.stderr and "RistrettoError" in p.stderr
        assert p.stderr.strip().splitlines()[-1].startswith(f"ristretto: error: {f.unknown}: layer 'ip'")


# --------------------------------------------------------------------------- more mix-ups

def test_weights_with_another_number_of_blobs_name_the_file(f, tmp_path, capsys):
    model = _write(tmp_path / "nobias.prototxt", GOOD_NET.replace("num_output: 4", "num_output: 4 bias_term: false"))
    run_error(["info", "-m", model, "-w", f.good_w], capsys, f"{f.good_w}: layer 'ip'", "2 stored blobs",
              "has 1")


def test_files_given_in_the_wrong_place(f, capsys):
    run_error(["info", "-m", f.good_w], capsys, f"{f.good_w}:", "not a text file")  # weights as the model
    run_error(["info", "-m", f.good, "-w", f.good], capsys, f"{f.good}: not a Caffe NetParameter")
    run_error(["finetune", "--solver", f.good], capsys, f"{f.good}:1:1:", "SolverParameter")  # net as solver
    run_error(["info", "-m", f.solver], capsys, f"{f.solver}:1:1:", "NetParameter")  # solver as net


def test_solver_settings_name_the_solver_file(f, tmp_path, capsys):
    bad_type = _write(tmp_path / "t.prototxt", SOLVER.format(net=f.data, prefix=tmp_path / "s") + 'type: "Foo"\n')
    run_error(["finetune", "--solver", bad_type], capsys, f"{bad_type}: unknown type 'Foo'", "SGD")
    bad_policy = _write(tmp_path / "p.prototxt", SOLVER.format(net=f.data, prefix=tmp_path / "s")
                        .replace('"fixed"', '"weird"'))
    run_error(["finetune", "--solver", bad_policy], capsys, bad_policy, "lr_policy 'weird'")
    assert sorted(os.listdir(tmp_path)) == ["p.prototxt", "t.prototxt"]


def test_gpu_without_cupy(f, capsys):
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed")
    except ImportError:
        pass
    run_error(["benchmark", "-m", f.data, "--gpu", "0", "-i", "1"], capsys, "--gpu 0", "CuPy is not installed")


@pytest.mark.parametrize("dims, shape", [("dim: -1 dim: 3", "(-1, 3)"), ("dim: 0 dim: 3", "(0, 3)")])
def test_non_positive_blob_dimensions(tmp_path, capsys, dims, shape):
    model = _write(tmp_path / "m.prototxt", f'''layer {{ name: "data" type: "Input" top: "data"
        input_param {{ shape {{ {dims} }} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param {{ num_output: 2 }} }}''')
    for command in (["info", "-m", model], ["benchmark", "-m", model, "-i", "1"]):
        run_error(command, capsys, model, "layer 'data' (Input)", f"top 'data' would have shape {shape}",
                  "must be positive")


def test_a_net_too_large_for_memory_is_one_line(tmp_path, capsys, monkeypatch):
    import ristretto_cli.net.net as net_module

    model = _write(tmp_path / "m.prototxt", GOOD_NET)

    def too_large(*args, **kwargs):
        raise MemoryError("Unable to allocate 74.5 GiB for an array with shape (2, 10000000000)")

    monkeypatch.setattr(net_module, "create_layer", too_large)
    run_error(["info", "-m", model], capsys, "out of memory", "74.5 GiB")
