"""Per-pixel mean of an LMDB of Datums, written as Caffe's ``compute_image_mean`` does:
a BlobProto with num=1, channels, height, width and the mean in ``data``.

Sums are kept in float64, so the result equals Caffe's float32 arithmetic wherever
that is exact (any sum below 2^24, e.g. all of CIFAR-10) and is closer elsewhere.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..caffe.atomic import atomic_write_bytes
from ..errors import RistrettoError
from ..progress import OnProgress, Steps
from .lmdb_io import LMDBReader, caffe_pb2, datum_to_array, parse_datum


def compute_mean(db, limit: int | None = None, *, on_progress: OnProgress | None = None) -> tuple[np.ndarray, int]:
    """(mean image float32 C x H x W, number of records) over an LMDB; ``on_progress(done,
    total, info)`` hears of every record read (see :mod:`ristretto_cli.progress`).

    Encoded datums are decoded with their native channels (B,G,R for colour)."""
    with LMDBReader(db) as reader:
        n = len(reader) if limit is None else min(int(limit), len(reader))
        total = None
        count = 0
        with Steps(on_progress, n) as steps:
            for key, value in reader.items(n):
                where = f"{db}[{key.decode('latin-1')}]"
                img = datum_to_array(parse_datum(value, where=where), "native", where=where)
                if total is None:
                    total = np.zeros(img.shape, dtype=np.float64)
                elif img.shape != total.shape:
                    raise RistrettoError(
                        f"{where}: record is {'x'.join(map(str, img.shape))}, "
                        f"the first was {'x'.join(map(str, total.shape))}; all records need one size"
                    )
                total += img
                count += 1
                steps.advance()
    return (total / count).astype(np.float32), count


def mean_blobproto(mean: np.ndarray):
    """A BlobProto 1 x C x H x W (legacy num/channels/height/width fields, like Caffe)."""
    m = np.asarray(mean, dtype=np.float32)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise RistrettoError(f"a mean image is C x H x W, got shape {m.shape}")
    blob = caffe_pb2().BlobProto()
    blob.num = 1
    blob.channels, blob.height, blob.width = (int(s) for s in m.shape)
    blob.data.extend(m.ravel().tolist())
    return blob


def write_mean(mean: np.ndarray, path) -> None:
    """Write a mean image: ``.npy`` (C x H x W float32) or else a binaryproto."""
    p = Path(path)
    if p.suffix.lower() == ".npy":
        import io

        buf = io.BytesIO()
        np.save(buf, np.asarray(mean, dtype=np.float32))
        atomic_write_bytes(p, buf.getvalue())
    else:
        atomic_write_bytes(p, mean_blobproto(mean).SerializeToString())


def channel_means(mean: np.ndarray) -> list[float]:
    """The per-channel averages Caffe's tool prints ("mean_value channel [c]")."""
    m = np.asarray(mean, dtype=np.float64)
    return [float(m[c].mean()) for c in range(m.shape[0])]
