"""Caffe ``Datum`` records and the LMDB databases that hold them.

A Datum is one image (or feature vector) plus an integer label, stored in one of
three ways, exactly as Caffe writes them:

* raw bytes in ``data`` (uint8, C x H x W planes, channel order as the writer chose:
  BGR for Caffe's image tools, R,G,B for its CIFAR converter),
* ``float_data`` (float32, same layout),
* ``encoded``: ``data`` holds a whole JPEG/PNG file; decoding gives BGR planes for
  colour images, as Caffe's OpenCV decoder does.

Keys are iterated in LMDB (byte-wise) order; readers wrap around at the end like
Caffe's data layer. Writers build the database in a temporary directory beside the
target and rename it into place only when everything went well, so an error or
Ctrl-C never leaves a partial database behind.
"""
from __future__ import annotations

import os
import threading
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import RistrettoError
from .transform import decode_image, hwc_to_chw


def caffe_pb2():
    """The generated protobuf module (imported lazily)."""
    from ..proto import caffe_pb2 as pb

    return pb


# --------------------------------------------------------------------------- Datum


def make_datum(array: np.ndarray, label: int = 0, *, explicit_encoded: bool = False):
    """A Datum holding ``array`` (C x H x W, or H x W for one channel).

    uint8 arrays go to ``data`` as raw bytes (Caffe's converters); any float array goes
    to ``float_data``. ``explicit_encoded`` also writes ``encoded: false`` as Caffe's
    ``CVMatToDatum`` (convert_imageset) does, which changes the serialized bytes.
    """
    pb = caffe_pb2()
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise RistrettoError(f"a Datum holds a C x H x W array, got shape {a.shape}")
    d = pb.Datum()
    d.channels, d.height, d.width = (int(s) for s in a.shape)
    if a.dtype == np.uint8:
        d.data = np.ascontiguousarray(a).tobytes()
    elif np.issubdtype(a.dtype, np.floating):
        d.float_data.extend(a.astype(np.float32).ravel().tolist())
    else:
        raise RistrettoError(f"a Datum holds uint8 or float data, got {a.dtype}")
    d.label = int(label)
    if explicit_encoded:
        d.encoded = False
    return d


def make_encoded_datum(file_bytes: bytes, label: int = 0):
    """A Datum holding a whole image file (``encoded: true``), like Caffe's
    ``ReadFileToDatum``: no channels/height/width are stored."""
    d = caffe_pb2().Datum()
    d.data = bytes(file_bytes)
    d.label = int(label)
    d.encoded = True
    return d


def parse_datum(value: bytes, where: str = "Datum"):
    """Parse serialized Datum bytes; ``where`` names the record in errors."""
    d = caffe_pb2().Datum()
    try:
        d.ParseFromString(bytes(value))
    except Exception as exc:  # google.protobuf.message.DecodeError
        raise RistrettoError(f"{where}: not a Caffe Datum ({exc})") from exc
    return d


def datum_to_array(datum, color: str = "native", where: str = "Datum") -> np.ndarray:
    """The image of a Datum as a C x H x W array: uint8 for ``data``/``encoded``,
    float32 for ``float_data``.

    ``color`` matters only for encoded datums: ``"native"`` keeps the file's channels
    (Caffe's ``DecodeDatumToCVMatNative``), ``"color"`` forces 3 channels and
    ``"gray"`` one (``force_color`` / ``force_gray``). Colour comes out as B,G,R planes.
    """
    if datum.encoded:
        img = decode_image(datum.data, color=color, where=where)
        return hwc_to_chw(img)
    c, h, w = datum.channels, datum.height, datum.width
    n = c * h * w
    if len(datum.data):
        if len(datum.data) != n:
            raise RistrettoError(
                f"{where}: data has {len(datum.data)} bytes, expected channels*height*width = {c}*{h}*{w} = {n}"
            )
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(c, h, w)
    if len(datum.float_data):
        if len(datum.float_data) != n:
            raise RistrettoError(
                f"{where}: float_data has {len(datum.float_data)} values, expected {c}*{h}*{w} = {n}"
            )
        return np.asarray(datum.float_data, dtype=np.float32).reshape(c, h, w)
    raise RistrettoError(f"{where}: Datum holds no data")


# --------------------------------------------------------------------------- reading


def _looks_like_leveldb(path: Path) -> bool:
    return path.is_dir() and (path / "CURRENT").exists() and any(path.glob("MANIFEST-*"))


def leveldb_refusal(source) -> RistrettoError:
    """The one-line error for a LevelDB source (``backend: LEVELDB``, or a LevelDB folder
    named as an LMDB): we read LMDB only, so say how to get one."""
    return RistrettoError(
        f"{source}: LevelDB databases are not read (LMDB only); rebuild it as LMDB with Caffe's "
        f"converters and --backend=lmdb (convert_imageset, convert_mnist_data, convert_cifar_data) or with "
        f"`ristretto convert mnist|cifar10|imageset|imagefolder ...`, then set backend: LMDB")


def check_data_source(data_param) -> None:
    """Refuse a ``data_param`` we cannot read before anything is opened."""
    if data_param.HasField("backend") and data_param.backend == data_param.LEVELDB:
        raise leveldb_refusal(data_param.source)


def _open_readonly(path: Path):
    import lmdb

    if not path.exists():
        raise RistrettoError(f"no such LMDB: {path}")
    if path.is_dir():
        if not (path / "data.mdb").exists():
            if _looks_like_leveldb(path):
                raise leveldb_refusal(path)
            raise RistrettoError(f"no such LMDB: {path} (directory has no data.mdb)")
        subdir = True
    else:
        subdir = False
    try:
        return lmdb.open(
            str(path), readonly=True, lock=False, readahead=False, subdir=subdir, max_readers=512, meminit=False
        )
    except lmdb.Error as exc:
        raise RistrettoError(f"{path}: cannot open LMDB ({exc})") from exc


# The lmdb binding allows one environment per path and process, but a train and a
# test net (or two data layers) may read the same database: readers share it.
_ENVS: dict[str, list] = {}
_ENVS_LOCK = threading.Lock()


def _acquire_env(path: Path):
    key = str(path.resolve())
    with _ENVS_LOCK:
        entry = _ENVS.get(key)
        if entry is None:
            entry = _ENVS[key] = [_open_readonly(path), 0]
        entry[1] += 1
        return entry[0]


def _release_env(path: Path) -> None:
    key = str(path.resolve())
    with _ENVS_LOCK:
        entry = _ENVS.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            entry[0].close()
            del _ENVS[key]


class LMDBReader:
    """Read-only access to a Caffe LMDB: ``len()``, ordered iteration, wrap-around.

    Every iterator opens its own read transaction in the thread that first advances
    it, so one reader can feed a background prefetch thread.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.env = _acquire_env(self.path)
        self.entries = int(self.env.stat()["entries"])
        if self.entries == 0:
            self.close()
            raise RistrettoError(f"LMDB is empty: {self.path}")

    def __len__(self) -> int:
        return self.entries

    def close(self) -> None:
        if self.env is not None:
            _release_env(self.path)
            self.env = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def first(self) -> tuple[bytes, bytes]:
        """The first (key, value) pair."""
        with self.env.begin(buffers=False) as txn:
            cur = txn.cursor()
            cur.first()
            return bytes(cur.key()), bytes(cur.value())

    def items(self, limit: int | None = None) -> Iterator[tuple[bytes, bytes]]:
        """All (key, value) pairs once, in key order (at most ``limit``)."""
        n = 0
        with self.env.begin(buffers=False) as txn:
            for key, value in txn.cursor():
                if limit is not None and n >= limit:
                    return
                yield bytes(key), bytes(value)
                n += 1

    def cycle(self, skip: int = 0) -> Iterator[tuple[bytes, bytes]]:
        """Endless (key, value) pairs: key order, back to the first key after the
        last (Caffe's "Restarting data prefetching from start"), after skipping
        ``skip`` records."""
        txn = self.env.begin(buffers=False)
        try:
            cur = txn.cursor()
            cur.first()
            for _ in range(skip % self.entries):
                if not cur.next():
                    cur.first()
            while True:
                yield bytes(cur.key()), bytes(cur.value())
                if not cur.next():
                    cur.first()
        finally:
            txn.abort()

    def datums(self, limit: int | None = None):
        """(key, Datum) pairs once, in key order."""
        for key, value in self.items(limit):
            yield key, parse_datum(value, where=f"{self.path}[{key.decode('latin-1')}]")


def read_datums(path, limit: int | None = None) -> list:
    """Every (key, Datum) of an LMDB as a list (small databases, tests)."""
    with LMDBReader(path) as r:
        return list(r.datums(limit))


# --------------------------------------------------------------------------- writing


def _umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old



class LMDBWriter:
    """Create a new LMDB atomically; use as a context manager::

        with LMDBWriter("out_lmdb") as w:
            w.put("00000000", datum.SerializeToString())

    Refuses to touch an existing path (like Caffe's converters). Records are
    committed in batches; the map grows when full. The database is built in a
    temporary sibling directory and renamed to ``path`` on success; on any error
    or KeyboardInterrupt the temporary directory is removed.
    """

    def __init__(self, path, commit_every: int = 1000, initial_map_size: int = 1 << 26):
        self.path = Path(path)
        if self.path.exists() or self.path.is_symlink():
            raise RistrettoError(f"{self.path}: already exists; refusing to overwrite (remove it or pick another name)")
        parent = self.path.parent
        if not parent.is_dir():
            raise RistrettoError(f"{self.path}: parent directory {parent} does not exist")
        self.commit_every = max(1, int(commit_every))
        self.map_size = int(initial_map_size)
        self.count = 0
        self._pending: list[tuple[bytes, bytes]] = []
        self._pending_bytes = 0
        self._tmp: Path | None = None
        self.env = None

    def __enter__(self):
        import lmdb

        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.tmp-", dir=self.path.parent))
        os.chmod(self._tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; use the usual mode
        try:
            self.env = lmdb.open(str(self._tmp), map_size=self.map_size, subdir=True, meminit=False)
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        return self

    def put(self, key, value: bytes) -> None:
        k = key.encode() if isinstance(key, str) else bytes(key)
        if not k:
            raise RistrettoError(f"{self.path}: empty LMDB key")
        if len(k) > 511:
            raise RistrettoError(f"{self.path}: LMDB key longer than 511 bytes: {k[:40]!r}...")
        self._pending.append((k, bytes(value)))
        self._pending_bytes += len(k) + len(value)
        self.count += 1
        if len(self._pending) >= self.commit_every or self._pending_bytes > (64 << 20):
            self._flush()

    def _flush(self) -> None:
        import lmdb

        if not self._pending:
            return
        while True:
            txn = self.env.begin(write=True)
            try:
                for k, v in self._pending:
                    txn.put(k, v, overwrite=True)
                txn.commit()
                break
            except lmdb.MapFullError:
                txn.abort()
                self.map_size *= 2
                self.env.set_mapsize(self.map_size)
            except BaseException:
                txn.abort()
                raise
        self._pending.clear()
        self._pending_bytes = 0

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self._flush()
                self.env.sync(True)
            self.env.close()
            self.env = None
            if exc_type is None:
                if self.path.exists():
                    raise RistrettoError(f"{self.path}: appeared while writing; refusing to overwrite")
                os.replace(self._tmp, self.path)
                self._tmp = None
        finally:
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None
        return False


def write_datums(path, records) -> int:
    """Write an iterable of (key, Datum or bytes) to a new LMDB; returns the count."""
    with LMDBWriter(path) as w:
        for key, value in records:
            w.put(key, value if isinstance(value, (bytes, bytearray)) else value.SerializeToString())
        return w.count
