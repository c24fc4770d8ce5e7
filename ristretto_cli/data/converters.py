"""Dataset converters that write Caffe LMDBs byte for byte like Caffe's tools.

* :func:`convert_mnist`    - ``examples/mnist/convert_mnist_data``: keys ``%08d``,
  Datum {channels 1, height, width, data (raw bytes), label}.
* :func:`convert_cifar10`  - ``examples/cifar10/convert_cifar_data``: keys ``%05d``
  (running index over all input files), Datum {3, 32, 32, data = R,G,B planes, label}.
* :func:`convert_imageset` - ``tools/convert_imageset``: keys ``%08d_<file name>``,
  Datum {channels, height, width, data (B,G,R planes), label, encoded: false}, or
  with ``encoded`` {data = the image file (re-encoded when resized), label,
  encoded: true}.

Every converter writes through :class:`~ristretto_cli.data.lmdb_io.LMDBWriter`, so an
existing output is never touched and an error leaves nothing behind. Converters print
nothing: their summary lines go to ``log(line)`` (default: this module's logger, INFO)
and their progress to ``on_progress(done, total, info)`` (see :mod:`ristretto_cli.progress`).
"""
from __future__ import annotations

import gzip
import logging
from pathlib import Path
from typing import Callable

import numpy as np

from ..caffe.atomic import read_bytes
from ..errors import RistrettoError
from ..progress import OnProgress, Steps
from .lmdb_io import LMDBWriter, make_datum, make_encoded_datum
from .transform import encode_image, hwc_to_chw, read_image

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


# --------------------------------------------------------------------------- reporting


def _reporter(log: Callable[[str], None] | None) -> Callable[[str], None]:
    """Where a converter's summary lines go: ``log``, else this module's logger (INFO)."""
    return log or logger.info


# --------------------------------------------------------------------------- MNIST


def _read_maybe_gzip(path: Path) -> bytes:
    raw = read_bytes(path)
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise RistrettoError(f"{path}: broken gzip data ({exc})") from exc
    return raw


def read_idx(path, expect_ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (MNIST format, optionally gzipped) of unsigned bytes."""
    p = Path(path)
    raw = _read_maybe_gzip(p)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise RistrettoError(f"{p}: not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise RistrettoError(f"{p}: IDX element type 0x{raw[2]:02x} is not unsigned byte (0x08)")
    ndim = raw[3]
    if expect_ndim is not None and ndim != expect_ndim:
        what = {3: "an image file (magic 2051)", 1: "a label file (magic 2049)"}.get(expect_ndim, f"{expect_ndim}-d")
        raise RistrettoError(f"{p}: expected {what}, got magic {int.from_bytes(raw[:4], 'big')}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise RistrettoError(f"{p}: truncated IDX header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    n = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header < n:
        raise RistrettoError(f"{p}: truncated: header promises {'x'.join(map(str, dims))} bytes, file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, count=n, offset=header).reshape(dims)


def convert_mnist(images, labels, db, limit: int | None = None, *, log: Callable[[str], None] | None = None,
                  on_progress: OnProgress | None = None) -> int:
    """MNIST idx files -> LMDB, as Caffe's convert_mnist_data. Returns the count."""
    info = _reporter(log)
    writer = LMDBWriter(db)  # refuses an existing output before any work
    imgs = read_idx(images, expect_ndim=3)
    labs = read_idx(labels, expect_ndim=1)
    if imgs.shape[0] != labs.shape[0]:
        raise RistrettoError(f"{images} has {imgs.shape[0]} images but {labels} has {labs.shape[0]} labels")
    n = imgs.shape[0] if limit is None else min(int(limit), imgs.shape[0])
    info(f"{n} items, rows {imgs.shape[1]}, cols {imgs.shape[2]}")
    with writer as w, Steps(on_progress, n) as steps:
        for i in range(n):
            d = make_datum(imgs[i][None], int(labs[i]))
            w.put(f"{i:08d}", d.SerializeToString())
            steps.advance()
    info(f"wrote {n} records to {db}")
    return n


# --------------------------------------------------------------------------- CIFAR-10

CIFAR_RECORD = 1 + 3 * 32 * 32


def read_cifar_batch(path) -> tuple[np.ndarray, np.ndarray]:
    """A CIFAR-10 binary batch: (images N x 3 x 32 x 32 uint8 R,G,B planes, labels N)."""
    p = Path(path)
    raw = _read_maybe_gzip(p)
    if len(raw) == 0 or len(raw) % CIFAR_RECORD:
        raise RistrettoError(
            f"{p}: size {len(raw)} is not a multiple of {CIFAR_RECORD} (1 label byte + 3072 pixel bytes per image)"
        )
    rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    return rec[:, 1:].reshape(-1, 3, 32, 32), rec[:, 0].copy()


def convert_cifar10(batches, db, limit: int | None = None, *, log: Callable[[str], None] | None = None,
                    on_progress: OnProgress | None = None) -> int:
    """CIFAR-10 binary batches -> LMDB, as Caffe's convert_cifar_data (keys ``%05d``
    counting across the files in the order given)."""
    info = _reporter(log)
    writer = LMDBWriter(db)
    batches = list(batches)
    if not batches:
        raise RistrettoError("no CIFAR-10 batch files given")
    loaded = [read_cifar_batch(b) for b in batches]  # check every input before writing
    total = sum(len(lab) for _, lab in loaded)
    n_out = total if limit is None else min(int(limit), total)
    k = 0
    with writer as w, Steps(on_progress, n_out) as steps:
        for imgs, labs in loaded:
            for i in range(len(labs)):
                if k >= n_out:
                    break
                d = make_datum(imgs[i], int(labs[i]))
                w.put(f"{k:05d}", d.SerializeToString())
                k += 1
                steps.advance()
    info(f"wrote {k} records to {db}")
    return k


# --------------------------------------------------------------------------- image sets


def join_root(root: str, name: str) -> str:
    """Caffe concatenates root_folder and the listed name; add the '/' if missing."""
    root = str(root)
    if not root or root.endswith("/"):
        return root + name
    return root + "/" + name


def image_datum(
    path: str,
    label: int,
    resize_height: int = 0,
    resize_width: int = 0,
    is_color: bool = True,
    encoding: str = "",
    channel_order: str = "BGR",
    resize_method: str | None = None,
):
    """Caffe's ``ReadImageToDatum`` for one file (see module docstring)."""
    img = read_image(path, resize_height, resize_width, is_color, method=resize_method)
    if encoding:
        enc = encoding.lower().lstrip(".")
        ext = Path(path).suffix.lower().lstrip(".")
        same_ext = ext == enc or (enc == "jpg" and ext == "jpeg")
        if not resize_height and not resize_width and same_ext:
            return make_encoded_datum(Path(path).read_bytes(), label)
        return make_encoded_datum(encode_image(img, enc, where=path), label)
    chw = hwc_to_chw(img)
    if channel_order == "RGB" and chw.shape[0] >= 3:
        chw = np.ascontiguousarray(chw[[2, 1, 0] + list(range(3, chw.shape[0]))])
    return make_datum(chw, label, explicit_encoded=True)


def convert_imageset(
    root,
    list_file,
    db,
    resize_height: int = 0,
    resize_width: int = 0,
    shuffle: bool = False,
    gray: bool = False,
    encoded: bool = False,
    encode_type: str = "",
    check_size: bool = False,
    channel_order: str = "BGR",
    seed: int | None = None,
    limit: int | None = None,
    resize_method: str | None = None,
    skip_unreadable: bool = False,
    lines: list[tuple[str, int]] | None = None,
    *,
    log: Callable[[str], None] | None = None,
    on_progress: OnProgress | None = None,
) -> int:
    """Images listed in ``list_file`` ("relative/path label" lines) -> LMDB, as Caffe's
    convert_imageset. Returns the number of records written."""
    info = _reporter(log)
    from .sources import read_image_list

    writer = LMDBWriter(db)
    channel_order = channel_order.upper()
    if channel_order not in ("BGR", "RGB"):
        raise RistrettoError(f"--channel-order must be BGR or RGB, got {channel_order!r}")
    resize_height, resize_width = max(0, int(resize_height)), max(0, int(resize_width))
    if (resize_height > 0) != (resize_width > 0):
        raise RistrettoError("--resize-height and --resize-width must be given together")
    encoded = encoded or bool(encode_type)
    if encoded and channel_order == "RGB":
        raise RistrettoError("--channel-order RGB needs raw datums; encoded datums always decode to BGR")
    if encoded and check_size:
        raise RistrettoError("--check-size cannot be used with --encoded")
    root_s = str(root)
    if not Path(root_s).is_dir():
        raise RistrettoError(f"{root_s}: no such image root directory")
    if lines is None:
        lines = read_image_list(list_file)
    if shuffle:
        perm = np.random.default_rng(seed).permutation(len(lines))
        lines = [lines[int(i)] for i in perm]
    n = len(lines) if limit is None else min(int(limit), len(lines))
    info(f"a total of {len(lines)} images" + (f", converting {n}" if n != len(lines) else ""))

    data_size = None
    count = skipped = 0
    with writer as w, Steps(on_progress, n) as steps:
        for line_id in range(n):
            name, label = lines[line_id]
            path = join_root(root_s, name)
            enc = encode_type
            if encoded and not enc:
                enc = Path(name).suffix.lower().lstrip(".")
                if not enc:
                    raise RistrettoError(f"{path}: cannot guess the encoding from the file name; give --encode-type")
            try:
                datum = image_datum(path, label, resize_height, resize_width, not gray, enc, channel_order, resize_method)
            except RistrettoError as exc:
                if not skip_unreadable:
                    raise
                info(f"skipping {path}: {exc}")
                skipped += 1
                steps.advance()
                continue
            if check_size:
                size = datum.channels * datum.height * datum.width
                if data_size is None:
                    data_size = size
                elif len(datum.data) != data_size:
                    raise RistrettoError(
                        f"{path}: {datum.channels}x{datum.height}x{datum.width} = {len(datum.data)} bytes, "
                        f"the first image had {data_size} (--check-size)"
                    )
            w.put(f"{line_id:08d}_{name}", datum.SerializeToString())
            count += 1
            steps.advance()
        if count == 0:
            raise RistrettoError(f"{list_file}: none of the images could be read")
    info(f"wrote {count} records to {db}" + (f" ({skipped} unreadable skipped)" if skipped else ""))
    return count


def image_folder_list(root) -> tuple[list[tuple[str, int]], list[str]]:
    """("class/file", label) for every image under ``root/<class>/``, classes sorted
    alphabetically (label = index), files sorted by name."""
    r = Path(root)
    if not r.is_dir():
        raise RistrettoError(f"{r}: no such directory")
    classes = sorted(d.name for d in r.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise RistrettoError(f"{r}: no class sub-directories")
    lines = []
    for label, cls in enumerate(classes):
        files = sorted(
            f.relative_to(r).as_posix()
            for f in (r / cls).rglob("*")
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
        )
        lines.extend((f, label) for f in files)
    if not lines:
        raise RistrettoError(f"{r}: no images found in the class directories")
    return lines, classes


def convert_imagefolder(root, db, *, log: Callable[[str], None] | None = None, on_progress: OnProgress | None = None,
                        **kwargs) -> tuple[int, list[str]]:
    """Every image under ``root/<class>/`` -> LMDB (labels = sorted class index)."""
    LMDBWriter(db)  # refuse an existing output before listing the folder
    lines, classes = image_folder_list(root)
    for i, c in enumerate(classes):
        _reporter(log)(f"label {i}: {c}")
    n = convert_imageset(root, f"{root} (folder listing)", db, lines=lines, log=log, on_progress=on_progress,
                         **kwargs)
    return n, classes
