"""The ``Data`` (LMDB of Datums) and ``ImageData`` (list of image files) layers.

Both have no bottoms and one or two tops (data, label). Each ``forward`` returns
the next batch; the database wraps around at its end as in Caffe. A background
thread keeps up to ``data_param.prefetch`` batches ready (ImageData: 4); the
order of records and every random draw (mirror, random crop, rand_skip, shuffle)
come from the layer's own generator, seeded once from ``backend.rng`` in
``setup``, so a seed gives the same batches with or without prefetching.
``reset()`` starts over from the first batch, with the same draws.
"""
from __future__ import annotations

import queue
import threading
from pathlib import Path

import numpy as np

from ..errors import RistrettoError
from ..layers.base import Layer, register
from .lmdb_io import LMDBReader, check_data_source, datum_to_array, parse_datum
from .transform import DataTransformer, hwc_to_chw, read_image

_LEVELDB, _LMDB = 0, 1  # caffe.DataParameter.DB


# --------------------------------------------------------------------------- prefetching


class Prefetcher:
    """Calls ``produce()`` on a daemon thread, keeping up to ``depth`` results queued.

    Results come out in production order; an exception in the thread is re-raised
    by the ``get()`` that would have returned its result.
    """

    def __init__(self, produce, depth: int):
        self._produce = produce
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ristretto-prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = ("ok", self._produce())
            except BaseException as exc:  # forwarded to the consumer
                item = ("error", exc)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[0] == "error":
                return

    def get(self):
        while True:
            try:
                kind, value = self._queue.get(timeout=0.5)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RistrettoError("data prefetch thread stopped unexpectedly") from None
        if kind == "error":
            raise value
        return value

    def stop(self) -> None:
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join()


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


# --------------------------------------------------------------------------- batch sources


class _Source:
    """Produces batches (data float32 N x C x H x W, labels float32 N) in order."""

    batch_size: int

    def restart(self, rng: np.random.Generator | None) -> None:
        raise NotImplementedError

    def next_example(self) -> tuple[np.ndarray, float, str]:
        """The next (C x H x W image, label, how to name it in an error)."""
        raise NotImplementedError

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        data = labels = None
        first = None
        for i in range(self.batch_size):
            img, label, what = self.next_example()
            x = self.transformer.transform(img, self.rng)
            if data is None:
                first = what
                data = np.empty((self.batch_size,) + x.shape, dtype=np.float32)
                labels = np.empty((self.batch_size,), dtype=np.float32)
            elif x.shape != data.shape[1:]:
                raise RistrettoError(
                    f"{self.where}: {what} gives a {'x'.join(map(str, x.shape))} input, {first} gave "
                    f"{'x'.join(map(str, data.shape[1:]))}; give every image one size (resize, new_height/"
                    f"new_width or crop_size)"
                )
            data[i] = x
            labels[i] = label
        return data, labels

    def close(self) -> None:
        pass


class _DatumSource(_Source):
    def __init__(self, reader: LMDBReader, transformer: DataTransformer, batch_size: int, rand_skip: int, color: str, where: str):
        self.reader = reader
        self.transformer = transformer
        self.batch_size = batch_size
        self.rand_skip = rand_skip
        self.color = color
        self.where = where
        self._it = None
        self.rng = None

    def restart(self, rng):
        self.close_iter()
        self.rng = rng
        skip = int(rng.integers(self.rand_skip)) if self.rand_skip > 0 else 0
        self._it = self.reader.cycle(skip)

    def image(self, key: bytes, value: bytes) -> np.ndarray:
        where = f"{self.where}: {self.reader.path}[{key.decode('latin-1')}]"
        datum = parse_datum(value, where=where)
        return datum_to_array(datum, self.color, where=where), float(datum.label)

    def next_example(self):
        key, value = next(self._it)
        img, label = self.image(key, value)
        return img, label, f"record {key.decode('latin-1')!r}"

    def close_iter(self):
        if self._it is not None:
            self._it.close()
            self._it = None

    def close(self):
        self.close_iter()
        self.reader.close()


class _ImageListSource(_Source):
    def __init__(self, lines, root: str, transformer, batch_size, rand_skip, shuffle, height, width, is_color, where):
        self.lines = lines
        self.root = root
        self.transformer = transformer
        self.batch_size = batch_size
        self.rand_skip = rand_skip
        self.shuffle = shuffle
        self.height, self.width = height, width
        self.is_color = is_color
        self.where = where
        self.rng = None
        self.order = list(range(len(lines)))
        self.pos = 0

    def path(self, name: str) -> str:
        if not self.root or self.root.endswith("/"):
            return self.root + name
        return self.root + "/" + name

    def restart(self, rng):
        self.rng = rng
        self.order = list(range(len(self.lines)))
        if self.shuffle:
            self.order = [int(i) for i in rng.permutation(len(self.lines))]
        self.pos = 0
        if self.rand_skip > 0:
            skip = int(rng.integers(self.rand_skip))
            if skip >= len(self.lines):
                raise RistrettoError(f"{self.where}: rand_skip drew {skip}, not less than the {len(self.lines)} images")
            self.pos = skip

    def peek_image(self) -> np.ndarray:
        name, _ = self.lines[self.order[self.pos]]
        return self.load(name)

    def load(self, name: str) -> np.ndarray:
        try:
            img = read_image(self.path(name), self.height, self.width, self.is_color)
        except RistrettoError as exc:
            raise RistrettoError(f"{self.where}: {exc}") from None
        return hwc_to_chw(img)

    def next_example(self):
        name, label = self.lines[self.order[self.pos]]
        img = self.load(name)
        self.pos += 1
        if self.pos >= len(self.lines):
            self.pos = 0
            if self.shuffle:
                self.order = [int(j) for j in self.rng.permutation(len(self.lines))]
        return img, label, f"image {name}"


# --------------------------------------------------------------------------- layers


class _PrefetchingDataLayer(Layer):
    num_bottoms = 0
    num_tops = (1, 2)
    default_prefetch = 4

    def __init__(self, param, phase, backend):
        super().__init__(param, phase, backend)
        self.source: _Source | None = None
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
class DataLayer(_PrefetchingDataLayer):
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
        self.source = _DatumSource(reader, self.transformer, int(dp.batch_size), int(dp.rand_skip), color, str(dp.source))
        key, value = reader.first()
        img, _ = self.source.image(key, value)
        return img.shape

    def _needs_rng(self):
        return self.transformer.needs_rand or self.param.data_param.rand_skip > 0


@register("ImageData")
class ImageDataLayer(_PrefetchingDataLayer):
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
        self.source = _ImageListSource(
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


def read_image_list(path) -> list[tuple[str, int]]:
    """Parse a Caffe image list: one "relative/path label" per line (the label is the
    last whitespace-separated field, so paths may contain spaces)."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise RistrettoError(f"{p}: no such image list file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RistrettoError(f"{p}: cannot read image list ({exc})") from exc
    lines = []
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s:
            continue
        parts = s.rsplit(None, 1)
        if len(parts) != 2:
            raise RistrettoError(f"{p}:{lineno}: expected 'path label', got {s!r}")
        try:
            label = int(parts[1])
        except ValueError:
            raise RistrettoError(f"{p}:{lineno}: label {parts[1]!r} is not an integer") from None
        lines.append((parts[0], label))
    if not lines:
        raise RistrettoError(f"{p}: image list is empty")
    return lines


__all__ = ["DataLayer", "ImageDataLayer", "Prefetcher", "read_image_list"]
