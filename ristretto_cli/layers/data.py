"""The ``Data`` (LMDB of Datums) and ``ImageData`` (list of image files) layers.

Both have no bottoms and one or two tops (data, label). Each ``forward`` returns
the next batch; the database wraps around at its end as in Caffe. A background
thread keeps up to ``data_param.prefetch`` batches ready (ImageData: 4); the
order of records and every random draw (mirror, random crop, rand_skip, shuffle)
come from the layer's own generator, seeded once from ``backend.rng`` in
``setup``, so a seed gives the same batches with or without prefetching.
``reset()`` starts over from the first batch, with the same draws; ``close()``
stops the prefetch thread and closes the database.

Reading and transforming records is :mod:`ristretto_cli.data`'s business
(sources, transforms, LMDB); this module only adapts it to the layer contract.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.lmdb_io import LMDBReader, check_data_source
from ..data.sources import BatchSource, DatumSource, ImageListSource, Prefetcher, read_image_list
from ..data.transform import DataTransformer
from ..errors import RistrettoError
from ..proto import caffe_pb2
from .base import Layer, register


def _derive_seed(backend) -> int:
    """One draw from the backend's generator (NumPy or CuPy) as a 62-bit seed."""
    rng = backend.rng
    try:
        return int(rng.integers(0, 2**62))
    except Exception:  # pragma: no cover - generators without integers()
        return int(float(rng.random()) * 2**53)


def _transform_param(param, sub):
    """``transform_param``, or one built from the deprecated fields of ``sub``
    (data_param / image_data_param of old nets) when only those are set."""
    if param.HasField("transform_param"):
        return param.transform_param
    tp = type(param.transform_param)()
    for field in ("scale", "mean_file", "crop_size", "mirror"):
        if sub is not None and sub.DESCRIPTOR.fields_by_name.get(field) is not None and sub.HasField(field):
            setattr(tp, field, getattr(sub, field))
    return tp


class _PrefetchingData(Layer):
    num_bottoms = 0
    num_tops = (1, 2)
    default_prefetch = 4

    def __init__(self, param, phase, backend):
        super().__init__(param, phase, backend)
        self.source: BatchSource | None = None
        self.transformer: DataTransformer | None = None
        self._prefetcher: Prefetcher | None = None
        self._seed: int | None = None
        self.data_shape: tuple = ()
        self.prefetch = self.default_prefetch

    # subclasses: build self.source / self.transformer, return the C x H x W of one input
    def _open(self) -> tuple[int, int, int]:
        raise NotImplementedError

    def _needs_rng(self) -> bool:
        return True

    def setup(self, bottom_shapes):
        self.check_arity(len(bottom_shapes), len(self.param.top))
        if self.source is not None:
            return
        try:
            chw = self._open()
        except RistrettoError as exc:
            msg = str(exc)
            raise self.error(msg) from None
        if self._needs_rng():
            self._seed = _derive_seed(self.backend)
        self._restart()
        self.data_shape = (self.source.batch_size,) + tuple(self.transformer.output_shape(*chw))

    def _restart(self) -> None:
        rng = np.random.default_rng(self._seed) if self._seed is not None else None
        self.source.restart(rng)
        self.transformer.rng = rng

    def reshape(self, bottom_shapes):
        if self.source is None:
            self.setup(bottom_shapes)
        shapes = [self.data_shape]
        if len(self.param.top) > 1:
            shapes.append((self.data_shape[0],))
        return shapes

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        """The next (data, labels) as host NumPy arrays."""
        if self.source is None:
            self.setup([])
        if self.prefetch <= 0:
            return self.source.next_batch()
        if self._prefetcher is None:
            self._prefetcher = Prefetcher(self.source.next_batch, self.prefetch)
        return self._prefetcher.get()

    def forward(self, bottoms):
        data, labels = self.next_batch()
        tops = [self.backend.asarray(data)]
        if len(self.param.top) > 1:
            tops.append(self.backend.asarray(labels))
        return tops

    def reset(self) -> None:
        """Start over: the next forward returns the first batch again (same draws)."""
        self._stop_prefetch()
        if self.source is not None:
            self._restart()

    def _stop_prefetch(self) -> None:
        if self._prefetcher is not None:
            self._prefetcher.stop()
            self._prefetcher = None

    def close(self) -> None:
        self._stop_prefetch()
        if self.source is not None:
            self.source.close()
            self.source = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


@register("Data")
class Data(_PrefetchingData):
    """Caffe's Data layer over an LMDB of Datums (``data_param``)."""

    def _open(self):
        dp = self.param.data_param
        if not dp.source:
            raise RistrettoError("data_param.source is not set")
        check_data_source(dp)
        if dp.batch_size <= 0:
            raise RistrettoError(f"data_param.batch_size must be positive, got {dp.batch_size}")
        self.prefetch = int(dp.prefetch) if dp.DESCRIPTOR.fields_by_name.get("prefetch") else self.default_prefetch
        self.transformer = DataTransformer(_transform_param(self.param, dp), self.phase, where="transform_param")
        color = self.transformer.color_mode
        if dp.DESCRIPTOR.fields_by_name.get("force_encoded_color") and dp.force_encoded_color:
            color = "color"
        reader = LMDBReader(Path(dp.source))
        self.source = DatumSource(reader, self.transformer, int(dp.batch_size), int(dp.rand_skip), color, str(dp.source))
        key, value = reader.first()
        img, _ = self.source.image(key, value)
        return img.shape

    def _needs_rng(self):
        return self.transformer.needs_rand or self.param.data_param.rand_skip > 0


@register("ImageData")
class ImageData(_PrefetchingData):
    """Caffe's ImageData layer: a text file of "path label" lines (``image_data_param``)."""

    def _open(self):
        ip = self.param.image_data_param
        if not ip.source:
            raise RistrettoError("image_data_param.source is not set")
        if (ip.new_height > 0) != (ip.new_width > 0):
            raise RistrettoError("image_data_param: set new_height and new_width together")
        if ip.batch_size <= 0:
            raise RistrettoError(f"image_data_param.batch_size must be positive, got {ip.batch_size}")
        lines = read_image_list(ip.source)
        self.transformer = DataTransformer(_transform_param(self.param, ip), self.phase, where="transform_param")
        self.source = ImageListSource(
            lines,
            ip.root_folder,
            self.transformer,
            int(ip.batch_size),
            int(ip.rand_skip),
            bool(ip.shuffle),
            int(ip.new_height),
            int(ip.new_width),
            bool(ip.is_color),
            str(ip.source),
        )
        # the first image fixes the shape (after shuffle / rand_skip, as in Caffe)
        self._seed = _derive_seed(self.backend) if self._needs_rng() else None
        rng = np.random.default_rng(self._seed) if self._seed is not None else None
        self.source.restart(rng)
        return self.source.peek_image().shape

    def setup(self, bottom_shapes):
        self.check_arity(len(bottom_shapes), len(self.param.top))
        if self.source is not None:
            return
        try:
            chw = self._open()
            self._restart()
            self.data_shape = (self.source.batch_size,) + tuple(self.transformer.output_shape(*chw))
        except RistrettoError as exc:
            raise self.error(str(exc)) from None

    def _needs_rng(self):
        ip = self.param.image_data_param
        return self.transformer.needs_rand or ip.shuffle or ip.rand_skip > 0


__all__ = ["Data", "ImageData"]
