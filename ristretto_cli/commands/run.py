"""Commands that run a net as it is: benchmark (test), forward, init, info, time."""
from __future__ import annotations

import functools
import io
import time as _time
import zipfile

import click
import numpy as np

from . import ui
from ..backend import get_backend, synchronize
from ..caffe.atomic import atomic_write_bytes, check_output_path
from ..errors import RistrettoError
from ..net.loading import load_net
from ..net.scoring import score
from .files import read_npy
from .options import (gpu_option, iterations_option, level_option, model_option, phase_option, seed_option,
                      split_stages, stage_option, weights_option)


@click.command("benchmark")
@model_option
@weights_option
@iterations_option
@gpu_option
@click.option("--json", "json_out", default=None, help="Also write every figure as JSON to this file ('-': stdout).")
@seed_option
@level_option
@stage_option
def benchmark(model, weights, iterations, gpu, json_out, seed, level, stages):
    """Score a net on its data layer, like `caffe test`: every output per batch and on average."""
    if json_out:
        check_output_path(json_out, [model, weights or ""], "--json")
    net = load_net(model, weights, "TEST", get_backend(gpu, seed), level=level, stages=split_stages(stages) or None)
    fixed = [net.layer_names[i] for i, l in enumerate(net.layers) if l.type == "Input"]
    if fixed:
        ui.log(f"{model}: Input layer(s) {', '.join(fixed)} give zeros; score a net with a data layer "
               f"(or run `ristretto forward` on arrays)")
    with ui.progress("benchmark", iterations) as advance:
        def on_batch(i, values):
            advance(info=" ".join(f"{k}={v:.4g}" for k, v in list(values.items())[:3]))
            if not ui.err.is_terminal:
                ui.log(f"Batch {i}, " + ", ".join(f"{k} = {v:.6g}" for k, v in values.items()))
        scores = score(net, iterations, on_batch)
    rows = []
    for name, mean in scores.means.items():
        w = scores.loss_weights.get(name)
        rows.append([name, mean, "" if not w else f"{w:g} x {mean:.6g} = {w * mean:.6g} loss"])
    console = ui.err if json_out == "-" else ui.out  # stdout holds nothing but the JSON then
    ui.table(f"{net.name or model}: mean over {iterations} batches", ["output", "value", "loss contribution"], rows,
             console=console)
    if scores.loss_weights:
        console.print(f"Loss: {scores.loss:.6g}", markup=False, highlight=False)
    if json_out:
        data = {"model": model, "weights": weights, **scores.to_json()}
        ui.write_json(json_out, data)


@click.command("forward")
@model_option
@weights_option
@click.option("--input", "inputs", multiple=True, required=True, metavar="BLOB=FILE.npy",
              help="Feed a blob from a .npy file (repeatable).")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="Write every blob to this .npz.")
@phase_option
@gpu_option
@seed_option
def forward(model, weights, inputs, output, phase, gpu, seed):
    """One forward pass on given arrays; save every blob as it stands at the end."""
    specs = [_parse_input(spec) for spec in inputs]
    check_output_path(output, [model, weights or ""] + [path for _, path, _ in specs])
    backend = get_backend(gpu, seed)
    net = load_net(model, weights, phase, backend)
    feeds = _check_feeds(net, model, specs)
    net.forward({k: backend.asarray(v) for k, v in feeds.items()})
    arrays = {name: backend.to_numpy(arr) for name, arr in net.blobs.items()}
    atomic_write_bytes(output, npz_bytes(arrays))
    log_accumulator_overflows(net)
    ui.log(f"wrote {len(arrays)} blobs to {output}")


def log_accumulator_overflows(net) -> None:
    """One line per layer whose simulated accumulator (accum_bits) overflowed in the last forward."""
    for layer in net.layers:
        count = getattr(layer, "accum_overflows", 0)
        if not count:
            continue
        cfg = layer.quant_config
        ui.log(f"layer '{layer.name}': {count:,} partial sums overflowed its {cfg.accum_bits}-bit accumulator "
               f"({cfg.accum_overflow.name}); {layer.accum_inexact:,} outputs differ from the exact sum")


def _parse_input(spec: str) -> tuple[str, str, np.ndarray]:
    blob, sep, path = spec.partition("=")
    if not sep or not blob or not path:
        raise RistrettoError(f"--input {spec!r}: expected BLOB=FILE.npy")
    return blob, path, read_npy(path)


def _check_feeds(net, model: str, specs) -> dict:
    """The fed arrays by blob, after checking that each names an input blob of the net and
    that no bottomless layer is fed only some of its tops. Arrays of another shape than
    the prototxt declares reshape the net (all together), as Caffe's Net::Reshape does."""
    feeds, where = {}, {}
    for blob, path, array in specs:
        where[blob] = f"--input {blob}={path}"
        if blob in feeds:
            raise RistrettoError(f"{where[blob]}: blob '{blob}' is given twice")
        if blob not in net.inputs:
            raise RistrettoError(f"{where[blob]}: {model} has no input blob '{blob}'; its inputs are "
                                 f"{', '.join(net.inputs) or 'none'}")
        feeds[blob] = array
    for i, tops in enumerate(net.top_names):
        fed = [t for t in tops if t in feeds]
        if not net.bottom_names[i] and fed and len(fed) < len(tops):
            missing = [t for t in tops if t not in feeds]
            raise RistrettoError(f"--input: layer '{net.layer_names[i]}' makes {', '.join(tops)}; feed "
                                 f"{', '.join(missing)} too (or none of them)")
        if not fed and net.layers[i].type == "Input":
            ui.log(f"--input: {', '.join(tops)} not given; the Input layer '{net.layer_names[i]}' gives zeros")
    changed = {b: tuple(a.shape) for b, a in feeds.items() if tuple(a.shape) != tuple(net.blob_shapes[b])}
    if changed:
        declared = {b: tuple(net.blob_shapes[b]) for b in changed}
        try:
            net.reshape({b: tuple(a.shape) for b, a in feeds.items()})
        except RistrettoError as exc:
            fed = ", ".join(f"{where[b]}: cannot reshape the net's blob '{b}' of shape {declared[b]} to shape {s}"
                            for b, s in changed.items())
            raise RistrettoError(f"{fed}: {exc}") from None
        ui.log("reshaped the net to the fed arrays: " + ", ".join(
            f"{b} {declared[b]} -> {s}" for b, s in changed.items()))
    return feeds


def npz_bytes(arrays: dict) -> bytes:
    """An uncompressed .npz archive of ``arrays`` (any blob name, also 'file'; no pickles)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


@click.command("init")
@model_option
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="Caffemodel to write.")
@seed_option
@click.option("--filler", type=click.Choice(["constant", "gaussian", "xavier", "msra", "uniform",
                                             "positive_unitball", "bilinear"]), default=None,
              help="Fill every weight (blobs of 2 or more axes) with this filler instead of the prototxt's.")
@phase_option
def init(model, output, seed, filler, phase):
    """Write a caffemodel with parameters drawn from the prototxt's fillers (or one named filler)."""
    from ..caffe.caffemodel import write_caffemodel
    from ..layers.fillers import fill
    from ..proto import caffe_pb2

    check_output_path(output, [model])
    backend = get_backend(None, seed)
    net = load_net(model, None, phase, backend)
    if filler:
        fp = caffe_pb2.FillerParameter(type=filler)
        for layer in net.layers:
            for k, blob in enumerate(layer.blobs):
                if blob.ndim >= 2:
                    try:
                        layer.blobs[k][...] = fill(fp, blob.shape, backend)
                    except RistrettoError as exc:
                        raise RistrettoError(f"{model}: layer '{layer.name}' ({layer.type}) blob {k}: "
                                             f"--filler {filler}: {exc}") from None
    write_caffemodel(output, net.to_proto(with_weights=True))
    ui.log(f"wrote {net.count_params():,} parameters of {sum(1 for l in net.layers if l.blobs)} layers to {output}")


@click.command("info")
@model_option
@weights_option
@phase_option
def info(model, weights, phase):
    """Per layer: type, top shapes, parameters and multiply-accumulates; totals."""
    net = load_net(model, weights, phase)
    rows, total_params, total_macs = [], 0, 0
    for i, layer in enumerate(net.layers):
        tops = [net.blob_shapes[t] for t in net.top_names[i]]
        bottoms = [net.blob_shapes[b] for b in net.bottom_names[i]]
        params = sum(int(b.size) for b in layer.blobs)
        macs = layer.macs(bottoms, tops)
        total_params += params
        total_macs += macs
        rows.append([layer.name, layer.type, " ".join("x".join(map(str, s)) for s in tops), params, macs])
    rows.append(["total", "", "", total_params, total_macs])
    batch = net.blob_shapes[net.inputs[0]][0] if net.inputs and net.blob_shapes[net.inputs[0]] else 0
    per_image = f", {total_macs / batch:,.0f} MACs per image" if batch else ""
    ui.table(f"{net.name or model} ({phase}, batch {batch or '?'}{per_image})",
             ["layer", "type", "top shapes", "params", "MACs"], rows)


@click.command("time")
@model_option
@weights_option
@iterations_option
@click.option("--phase", type=click.Choice(["TRAIN", "TEST"], case_sensitive=False), default="TRAIN",
              show_default=True, help="Net phase; TRAIN (Caffe's default) also times the backward pass.")
@gpu_option
@level_option
@stage_option
def time_cmd(model, weights, iterations, phase, gpu, level, stages):
    """Average forward and backward time per layer, like `caffe time` (backward in the TRAIN phase)."""
    backend = get_backend(gpu)
    net = load_net(model, weights, phase, backend, level=level, stages=split_stages(stages) or None)
    train = phase.upper() == "TRAIN"
    fwd, bwd = np.zeros(len(net.layers)), np.zeros(len(net.layers))
    clock = _time.perf_counter
    sync = functools.partial(synchronize, backend)
    stamps = {}

    def timer(totals):
        def on_layer(i, layer, *_):
            sync()
            now = clock()
            totals[i] += now - stamps["t"]
            stamps["t"] = now
        return on_layer

    on_forward, on_backward = timer(fwd), timer(bwd)
    bwd_total = 0.0
    net.forward()  # warm-up
    with ui.progress("time", iterations) as advance:
        for _ in range(iterations):
            sync()
            stamps["t"] = clock()
            net.forward(on_layer=on_forward)
            if train:
                net.zero_diffs()
                sync()
                t0 = stamps["t"] = clock()
                net.backward(on_layer=on_backward)
                sync()
                bwd_total += clock() - t0
            advance()
    ms = 1000 / iterations
    if train:
        rows = [[l.name, l.type, ms * fwd[i], ms * bwd[i]] for i, l in enumerate(net.layers)]
        rows.append(["forward", "", ms * fwd.sum(), ""])
        rows.append(["backward", "", "", ms * bwd_total])
        rows.append(["forward-backward", "", ms * (fwd.sum() + bwd_total), ""])
        columns = ["layer", "type", "forward ms", "backward ms"]
    else:
        rows = [[l.name, l.type, ms * fwd[i]] for i, l in enumerate(net.layers)]
        rows.append(["forward", "", ms * fwd.sum()])
        columns = ["layer", "type", "forward ms"]
    ui.table(f"{net.name or model} ({phase.upper()}): ms per batch, mean of {iterations} iterations", columns, rows)


@click.command("device-query")
@click.option("--gpu", default=None, metavar="ID|all|A,B", help="Device(s) to list; default: every device.")
def device_query(gpu):
    """List the CUDA devices CuPy sees (id, name, compute capability, memory), like
    `caffe device_query`."""
    from ..backend import cuda_devices
    from .options import parse_gpu_list

    ids = parse_gpu_list(gpu)
    if gpu not in (None, "") and ids is None:
        raise RistrettoError(f"--gpu {gpu}: device_query needs a device id, a list like 0,1 or 'all'")
    devices = cuda_devices(None if ids in (None, "all") else ids)
    rows = [[d["id"], d["name"], d["compute_capability"], f"{d['total_memory'] / 2**30:.1f} GiB",
             d["multiprocessors"], f"{d['clock_khz'] / 1000:.0f} MHz"] for d in devices]
    ui.table("CUDA devices", ["id", "name", "compute capability", "total memory", "multiprocessors", "clock"], rows)


benchmark_alias = click.Command("test", params=benchmark.params, callback=benchmark.callback,
                                help="Alias of `benchmark` (Caffe's verb).")
COMMANDS = [benchmark, benchmark_alias, forward, init, info, time_cmd, device_query]
