"""`ristretto convert ...` (dataset -> LMDB) and `ristretto compute-mean`.

Thin wrappers over :mod:`ristretto_cli.data.converters` and :mod:`ristretto_cli.data.mean`:
they draw the progress bar and the summary lines on stderr (neither with --quiet).
Flags are declared with dashes; `--resize_height` etc. work too (cli.main rewrites them).
"""
from __future__ import annotations

import contextlib

import click

from . import ui
from ..errors import RistrettoError


def _echo_err(message: str) -> None:
    click.echo(message, err=True)


def _log(quiet: bool):
    """Where a converter's summary lines go: stderr, or nowhere with --quiet."""
    return None if quiet else _echo_err


@contextlib.contextmanager
def _progress(description: str, quiet: bool):
    """A converter's ``on_progress``: a progress bar on a terminal's stderr (None with --quiet)."""
    if quiet:
        yield None
        return
    with ui.progress_callback(description, style="count") as on_progress:
        yield on_progress


def _check_backend(backend: str) -> None:
    if backend.lower() != "lmdb":
        raise RistrettoError(f"--backend {backend}: only lmdb is supported")


_backend_opt = click.option(
    "--backend", default="lmdb", show_default=True, help="Database type (Caffe flag; only lmdb is supported)."
)
_limit_opt = click.option("--limit", type=click.IntRange(min=1), default=None, help="Process only the first N items.")
_quiet_opt = click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")


@click.group("convert")
def convert_group():
    """Convert datasets to Caffe LMDBs of Datum records (like Caffe's convert tools)."""


@convert_group.command("mnist", short_help="MNIST idx files -> LMDB (convert_mnist_data).")
@click.argument("images", type=click.Path(dir_okay=False))
@click.argument("labels", type=click.Path(dir_okay=False))
@click.argument("db", type=click.Path())
@_limit_opt
@_backend_opt
@_quiet_opt
def convert_mnist_cmd(images, labels, db, limit, backend, quiet):
    """MNIST idx IMAGES + LABELS (optionally .gz) -> LMDB DB (keys %08d, 1x28x28 raw)."""
    from ..data.converters import convert_mnist

    _check_backend(backend)
    with _progress("mnist", quiet) as on_progress:
        convert_mnist(images, labels, db, limit=limit, log=_log(quiet), on_progress=on_progress)


@convert_group.command("cifar10", short_help="CIFAR-10 binary batches -> LMDB (convert_cifar_data).")
@click.argument("batches", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.argument("db", type=click.Path())
@_limit_opt
@_backend_opt
@_quiet_opt
def convert_cifar10_cmd(batches, db, limit, backend, quiet):
    """CIFAR-10 binary batch files BIN... -> LMDB DB (keys %05d, 3x32x32 R,G,B planes)."""
    from ..data.converters import convert_cifar10

    _check_backend(backend)
    with _progress("cifar10", quiet) as on_progress:
        convert_cifar10(batches, db, limit=limit, log=_log(quiet), on_progress=on_progress)


def _imageset_options(f):
    opts = [
        click.option("--resize-height", type=int, default=0, show_default=True, help="Height images are resized to (0: keep)."),
        click.option("--resize-width", type=int, default=0, show_default=True, help="Width images are resized to (0: keep)."),
        click.option("--shuffle", is_flag=True, help="Randomly shuffle the order of images (see --seed)."),
        click.option("--seed", type=int, default=None, help="Seed for --shuffle."),
        click.option("--gray", is_flag=True, help="Treat images as grayscale (1 channel)."),
        click.option("--encoded", is_flag=True, help="Store the encoded image file in the datum."),
        click.option("--encode-type", default="", help="Re-encode as this type ('png', 'jpg', ...); implies --encoded."),
        click.option("--check-size", is_flag=True, help="Check that all images have the same size."),
        click.option(
            "--channel-order",
            type=click.Choice(["BGR", "RGB"], case_sensitive=False),
            default="BGR",
            show_default=True,
            help="Plane order of raw colour datums: BGR like Caffe's convert_imageset, "
            "RGB like its CIFAR-10 converter.",
        ),
        click.option(
            "--resize-method",
            type=click.Choice(["opencv", "pillow"]),
            default=None,
            help="opencv: cv2.resize bilinear, as Caffe (default when OpenCV is installed); pillow: PIL bilinear.",
        ),
        click.option("--skip-unreadable", is_flag=True, help="Skip images that cannot be read (Caffe does) instead of failing."),
        _limit_opt,
        _backend_opt,
        _quiet_opt,
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _imageset_kwargs(kw: dict) -> dict:
    _check_backend(kw.pop("backend"))
    kw["channel_order"] = kw["channel_order"].upper()
    kw["log"] = _log(kw.pop("quiet"))
    return kw


@convert_group.command("imageset", short_help="Listed image files -> LMDB (convert_imageset).")
@click.argument("root", type=click.Path(file_okay=False))
@click.argument("list_file", metavar="LIST", type=click.Path(dir_okay=False))
@click.argument("db", type=click.Path())
@_imageset_options
def convert_imageset_cmd(root, list_file, db, **kw):
    """Images named in LIST ("relative/path label" lines, relative to ROOT) -> LMDB DB,
    like Caffe's convert_imageset (keys %08d_<path>)."""
    from ..data.converters import convert_imageset

    kw = _imageset_kwargs(kw)
    with _progress("images", kw["log"] is None) as on_progress:
        convert_imageset(root, list_file, db, on_progress=on_progress, **kw)


@convert_group.command("imagefolder", short_help="ROOT/<class>/ image folders -> LMDB.")
@click.argument("root", type=click.Path(file_okay=False))
@click.argument("db", type=click.Path())
@_imageset_options
def convert_imagefolder_cmd(root, db, **kw):
    """Every image under ROOT/<class>/ -> LMDB DB; labels are the class directories
    in alphabetical order (0, 1, ...)."""
    from ..data.converters import convert_imagefolder

    kw = _imageset_kwargs(kw)
    with _progress("images", kw["log"] is None) as on_progress:
        convert_imagefolder(root, db, on_progress=on_progress, **kw)


@click.command("compute-mean", short_help="Per-pixel mean of an LMDB (compute_image_mean).")
@click.argument("db", type=click.Path())
@click.argument("out", type=click.Path(dir_okay=False))
@_limit_opt
@_backend_opt
@_quiet_opt
def compute_mean(db, out, limit, backend, quiet):
    """Per-pixel mean of LMDB DB -> OUT (.binaryproto 1xCxHxW as Caffe's
    compute_image_mean, or .npy CxHxW)."""
    from pathlib import Path

    from ..data.mean import channel_means, compute_mean as _compute_mean, write_mean

    _check_backend(backend)
    if Path(out).resolve() == Path(db).resolve():
        raise RistrettoError(f"{out}: the output would overwrite the input database")
    with _progress("mean", quiet) as on_progress:
        mean, count = _compute_mean(db, limit=limit, on_progress=on_progress)
    write_mean(mean, out)
    if not quiet:
        c, h, w = mean.shape
        click.echo(f"mean of {count} records, {c}x{h}x{w}, written to {out}")
        for i, v in enumerate(channel_means(mean)):
            click.echo(f"mean_value channel [{i}]: {v:.6g}")


COMMANDS = [convert_group, compute_mean]
