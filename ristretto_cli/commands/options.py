"""Options shared by several commands."""
from __future__ import annotations

import click

from ..errors import RistrettoError


def parse_gpu_list(value: str | int | None) -> list[int] | str | None:
    """Caffe's --gpu syntax: a device id, -1 (the CPU), 'all' or a comma list 'a,b'.
    Returns the ids in order, "all", or None for none given / the CPU."""
    if value is None or value == "":
        return None
    text = str(value).strip().lower()
    if text == "all":
        return "all"
    try:
        ids = [int(p.strip()) for p in text.split(",")]
    except ValueError:
        raise RistrettoError(f"--gpu {value!r}: expected a device id, -1, a list like 0,1 or 'all'") from None
    if len(ids) > 1 and any(i < 0 for i in ids):
        raise RistrettoError(f"--gpu {value!r}: -1 (the CPU) cannot be part of a device list")
    return None if ids[0] < 0 else ids


def parse_gpu(value: str | int | None) -> int | None:
    """The one device a command runs on for Caffe's --gpu (None: the CPU). Commands run
    on one device, so 'all' and a list mean their first device, with a notice on stderr."""
    ids = parse_gpu_list(value)
    if ids is None:
        return None
    if ids == "all" or len(ids) > 1:
        from . import ui

        gpu = 0 if ids == "all" else ids[0]
        ui.log(f"--gpu {value}: ristretto runs on one device; using device {gpu}")
        return gpu
    return ids[0]


def _gpu_callback(ctx, param, value):
    return parse_gpu(value)


model_option = click.option("--model", "-m", required=True, type=click.Path(dir_okay=False),
                            help="Network prototxt (any Caffe version).")
weights_option = click.option("--weights", "-w", default=None,
                              help="Caffemodel(s) to copy weights from by layer name; 'a,b' for several.")
gpu_option = click.option("--gpu", default=None, callback=_gpu_callback, metavar="ID|-1|all|A,B",
                          help="CUDA device (needs CuPy): an id, 'all' or a list like 0,1 (one device is used: "
                               "the first); omit or -1 for the CPU.")
iterations_option = click.option("--iterations", "-i", type=click.IntRange(min=1), default=50, show_default=True,
                                 help="Number of batches.")
phase_option = click.option("--phase", type=click.Choice(["TEST", "TRAIN"], case_sensitive=False), default="TEST",
                            show_default=True, help="Net phase (include/exclude rules, layer behaviour).")
level_option = click.option("--level", type=int, default=0, show_default=True,
                            help="Net state level (Caffe's --level).")
stage_option = click.option("--stage", "stages", default="",
                            help="Net state stages, comma separated (Caffe's --stage).")
seed_option = click.option("--seed", type=int, default=None, help="Random seed (fillers, dropout, crops).")


def split_stages(stages: str) -> list[str]:
    """--stage 'a,b' -> ['a', 'b']."""
    return [s.strip() for s in (stages or "").split(",") if s.strip()]
