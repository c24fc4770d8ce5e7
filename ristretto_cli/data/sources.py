"""Where the Data and ImageData layers get their batches: LMDB Datums or a list of
image files, assembled into (data, labels) batches on the host, with a prefetch
thread.

``BatchSource.next_batch`` returns float32 N x C x H x W data and N labels in
order; ``restart(rng)`` starts over with that generator's draws (rand_skip,
shuffle, mirror, random crop). The layers themselves live in
:mod:`ristretto_cli.layers.data` (layers -> data, never the other way).
"""
from __future__ import annotations

import queue
import threading
from pathlib import Path

import numpy as np

from ..errors import RistrettoError
from .lmdb_io import LMDBReader, datum_to_array, parse_datum
from .transform import DataTransformer, hwc_to_chw, read_image


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


# --------------------------------------------------------------------------- batch sources


class BatchSource:
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


class DatumSource(BatchSource):
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


class ImageListSource(BatchSource):
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


__all__ = ["BatchSource", "DatumSource", "ImageListSource", "Prefetcher", "read_image_list"]
