"""Data side: Datum I/O, LMDB reader/writer, Caffe's transformer, Data/ImageData layers,
converters and compute-mean, checked against hand-built bytes, hand-computed values
and OpenCV."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from conftest import run_cli as run_main
from conftest import shared_path
from ristretto_cli.backend import Backend
from ristretto_cli.cli import cli
from ristretto_cli.data import transform as T
from ristretto_cli.data.converters import read_idx
from ristretto_cli.data.sources import Prefetcher, read_image_list
from ristretto_cli.data.lmdb_io import (
    LMDBReader,
    LMDBWriter,
    datum_to_array,
    make_datum,
    make_encoded_datum,
    parse_datum,
    read_datums,
    write_datums,
)
from ristretto_cli.data.mean import compute_mean, mean_blobproto
from ristretto_cli.errors import RistrettoError
from ristretto_cli.layers import TEST, TRAIN, create_layer
from ristretto_cli.proto import caffe_pb2

cv2 = pytest.importorskip("cv2")

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# --------------------------------------------------------------------------- helpers


def invoke(args):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def wire_datum(c, h, w, data: bytes, label: int, encoded: bool | None = None) -> bytes:
    """Datum wire bytes assembled by hand (fields 1, 2, 3, 4, 5[, 7]) as C++ Caffe writes them."""
    out = b"\x08" + varint(c) + b"\x10" + varint(h) + b"\x18" + varint(w)
    out += b"\x22" + varint(len(data)) + data + b"\x28" + varint(label)
    if encoded is not None:
        out += b"\x38" + (b"\x01" if encoded else b"\x00")
    return out


def small_db(tmp_path, n=7, shape=(2, 3, 4), name="db"):
    """An LMDB with n raw records: record i is filled with value i*10 + position, label i."""
    base = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    imgs = [((base + 10 * i) % 256).astype(np.uint8) for i in range(n)]
    path = tmp_path / name
    write_datums(path, ((f"{i:08d}", make_datum(imgs[i], i)) for i in range(n)))
    return path, imgs


def data_layer(source, batch_size=3, phase=TEST, tops=("data", "label"), seed=0, prefetch=None, **tp):
    lp = caffe_pb2.LayerParameter(name="data", type="Data", top=list(tops))
    lp.data_param.source = str(source)
    lp.data_param.batch_size = batch_size
    lp.data_param.backend = caffe_pb2.DataParameter.LMDB
    if prefetch is not None:
        lp.data_param.prefetch = prefetch
    for k, v in tp.items():
        if k == "mean_value":
            lp.transform_param.mean_value.extend(v)
        else:
            setattr(lp.transform_param, k, v)
    layer = create_layer(lp, phase, Backend(np, seed=seed))
    layer.setup([])
    return layer


# --------------------------------------------------------------------------- Datum


@settings(max_examples=40, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 6))), st.integers(-5, 1000))
def test_raw_datum_round_trip(img, label):
    d = parse_datum(make_datum(img, label).SerializeToString())
    assert (d.channels, d.height, d.width, d.label) == (*img.shape, label)
    out = datum_to_array(d)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, img)


@settings(max_examples=40, deadline=None)
@given(
    arrays(
        np.float32,
        st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5)),
        elements=st.floats(-1e6, 1e6, width=32, allow_nan=False),
    )
)
def test_float_datum_round_trip(img):
    d = parse_datum(make_datum(img, 3).SerializeToString())
    assert len(d.data) == 0 and len(d.float_data) == img.size
    out = datum_to_array(d)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, img)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12), st.sampled_from([1, 3]))))
def test_encoded_png_datum_round_trip(hwc):
    ok, png = cv2.imencode(".png", hwc if hwc.shape[2] == 3 else hwc[:, :, 0])
    assert ok
    d = parse_datum(make_encoded_datum(png.tobytes(), 7).SerializeToString())
    assert d.encoded and d.label == 7 and not d.HasField("channels")
    np.testing.assert_array_equal(datum_to_array(d), hwc.transpose(2, 0, 1))  # native channels
    colour = datum_to_array(d, "color")
    assert colour.shape[0] == 3
    gray = datum_to_array(d, "gray")
    assert gray.shape == (1,) + hwc.shape[:2]


def test_raw_datum_bytes_match_hand_built_wire_format():
    img = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    assert make_datum(img, 5).SerializeToString() == wire_datum(1, 3, 4, img.tobytes(), 5)
    # convert_imageset's CVMatToDatum also writes encoded: false explicitly
    assert make_datum(img, 5, explicit_encoded=True).SerializeToString() == wire_datum(1, 3, 4, img.tobytes(), 5, False)


def test_encoded_colour_decodes_to_bgr_planes_with_and_without_opencv(monkeypatch):
    from PIL import Image
    import io

    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 0] = 200  # red
    rgb[0, 0, 1] = 50  # a little green in one pixel
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG")
    d = make_encoded_datum(buf.getvalue(), 1)
    want = rgb[:, :, ::-1].transpose(2, 0, 1)  # B, G, R planes
    np.testing.assert_array_equal(datum_to_array(d), want)
    monkeypatch.setattr(T, "cv2", None)  # the Pillow fallback agrees
    np.testing.assert_array_equal(datum_to_array(d), want)
    np.testing.assert_array_equal(datum_to_array(d, "color"), want)


def test_pillow_fallback_decodes_jpeg_like_opencv(monkeypatch):
    f = shared_path("data", "cifar10", "test_jpg", "cat", "0000.jpg")
    data = f.read_bytes()
    ref = {m: T.decode_image(data, m) for m in ("color", "gray", "native")}
    assert np.array_equal(ref["color"], cv2.imread(str(f), cv2.IMREAD_COLOR))
    monkeypatch.setattr(T, "cv2", None)
    for m, want in ref.items():
        np.testing.assert_array_equal(T.decode_image(data, m), want)


def test_bad_datum_and_bad_image_are_one_line_errors():
    with pytest.raises(RistrettoError, match="not a Caffe Datum"):
        parse_datum(b"\xff\xff\xff", where="x[1]")
    with pytest.raises(RistrettoError, match="cannot decode"):
        datum_to_array(make_encoded_datum(b"not an image"))
    d = make_datum(np.zeros((1, 2, 2), np.uint8))
    d.height = 3
    with pytest.raises(RistrettoError, match="expected channels"):
        datum_to_array(d)


# --------------------------------------------------------------------------- LMDB


def test_lmdb_reader_order_wraparound_and_errors(tmp_path):
    path, imgs = small_db(tmp_path, n=4)
    with LMDBReader(path) as r:
        assert len(r) == 4
        assert [k for k, _ in r.items()] == [f"{i:08d}".encode() for i in range(4)]
        cyc = r.cycle(skip=3)
        keys = [next(cyc)[0] for _ in range(6)]
        cyc.close()
    assert keys == [b"00000003", b"00000000", b"00000001", b"00000002", b"00000003", b"00000000"]
    with pytest.raises(RistrettoError, match=r"no such LMDB: .*nothing_here"):
        LMDBReader(tmp_path / "nothing_here")
    import lmdb

    lmdb.open(str(tmp_path / "empty")).close()
    with pytest.raises(RistrettoError, match=r"LMDB is empty: .*empty"):
        LMDBReader(tmp_path / "empty")


def test_lmdb_writer_refuses_overwrite_grows_map_and_leaves_nothing_on_error(tmp_path):
    path = tmp_path / "big"
    blob = bytes(range(256)) * 400  # 100 KiB per record
    with LMDBWriter(path, commit_every=7, initial_map_size=1 << 16) as w:
        for i in range(30):
            w.put(f"{i:03d}", blob)
    with LMDBReader(path) as r:
        assert len(r) == 30 and all(v == blob for _, v in r.items())
    assert oct(path.stat().st_mode & 0o777) != oct(0o700)  # not mkdtemp's private mode
    with pytest.raises(RistrettoError, match="already exists"):
        LMDBWriter(path)
    with pytest.raises(KeyboardInterrupt):
        with LMDBWriter(tmp_path / "partial") as w:
            w.put("a", b"1")
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big"]


# --------------------------------------------------------------------------- transform


def tparam(**kw):
    p = caffe_pb2.TransformationParameter()
    for k, v in kw.items():
        if k == "mean_value":
            p.mean_value.extend(v)
        else:
            setattr(p, k, v)
    return p


def caffe_transform_loops(img, mean, scale, crop, h_off, w_off, mirror):
    """Caffe's Transform(Datum) index arithmetic, written out element by element."""
    c_, H, W = img.shape
    h = crop or H
    w = crop or W
    flat = img.ravel().astype(np.float32)
    mflat = None if mean is None else mean.ravel().astype(np.float32)
    out = np.zeros(c_ * h * w, np.float32)
    for c in range(c_):
        for y in range(h):
            for x in range(w):
                di = (c * H + h_off + y) * W + w_off + x
                ti = (c * h + y) * w + (w - 1 - x if mirror else x)
                m = np.float32(0) if mflat is None else mflat[di]
                out[ti] = (flat[di] - m) * np.float32(scale)
    return out.reshape(c_, h, w)


def test_transform_scale_and_mean_values_by_hand():
    img = np.array([[[0, 10], [20, 255]], [[1, 2], [3, 4]]], np.uint8)
    out = T.DataTransformer(tparam(scale=0.5, mean_value=[10, 2])).transform(img)
    np.testing.assert_array_equal(out, [[[-5, 0], [5, 122.5]], [[-0.5, 0], [0.5, 1]]])
    one = T.DataTransformer(tparam(mean_value=[1])).transform(img)  # one value for all channels
    np.testing.assert_array_equal(one, img.astype(np.float32) - 1)
    assert out.dtype == np.float32
    with pytest.raises(RistrettoError, match="mean_value"):
        T.DataTransformer(tparam(mean_value=[1, 2, 3])).transform(img)
    with pytest.raises(RistrettoError, match="same time"):
        T.DataTransformer(tparam(mean_value=[1], mean_file="m.binaryproto"))
    with pytest.raises(RistrettoError, match="crop_size 3"):
        T.DataTransformer(tparam(crop_size=3)).transform(img)


def write_mean(tmp_path, mean):
    p = tmp_path / "mean.binaryproto"
    p.write_bytes(mean_blobproto(mean).SerializeToString())
    return p


def test_transform_mean_file_centre_crop_alignment(tmp_path):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (3, 5, 6), dtype=np.uint8)
    mean = rng.uniform(0, 255, (3, 5, 6)).astype(np.float32)
    p = write_mean(tmp_path, mean)
    t = T.DataTransformer(tparam(mean_file=str(p), crop_size=3, scale=0.25), TEST)
    out = t.transform(img)
    # centre: h_off = (5-3)//2 = 1, w_off = (6-3)//2 = 1
    np.testing.assert_array_equal(out, caffe_transform_loops(img, mean, 0.25, 3, 1, 1, False))
    np.testing.assert_array_equal(out, (img[:, 1:4, 1:4].astype(np.float32) - mean[:, 1:4, 1:4]) * np.float32(0.25))
    bad = T.DataTransformer(tparam(mean_file=str(p)), TEST)
    with pytest.raises(RistrettoError, match="mean_file"):
        bad.transform(img[:, :4])


def test_transform_random_crop_and_mirror_match_caffe_loops(tmp_path):
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (2, 6, 7), dtype=np.uint8)
    mean = rng.uniform(0, 255, (2, 6, 7)).astype(np.float32)
    p = write_mean(tmp_path, mean)
    t = T.DataTransformer(tparam(mean_file=str(p), crop_size=4, mirror=True, scale=2.0), TRAIN)
    seen = set()
    for seed in range(40):
        out = t.transform(img, np.random.default_rng(seed))
        # replay the draws in Caffe's order: mirror, then h_off, w_off
        g = np.random.default_rng(seed)
        do_mirror = bool(g.integers(2))
        h_off, w_off = int(g.integers(6 - 4 + 1)), int(g.integers(7 - 4 + 1))
        np.testing.assert_array_equal(out, caffe_transform_loops(img, mean, 2.0, 4, h_off, w_off, do_mirror))
        seen.add((do_mirror, h_off, w_off))
    assert {m for m, _, _ in seen} == {False, True} and len(seen) > 8


def test_transform_test_phase_mirror_follows_caffe():
    img = np.arange(6, dtype=np.uint8).reshape(1, 2, 3)
    t = T.DataTransformer(tparam(mirror=True), TEST)
    outs = {t.transform(img, np.random.default_rng(s)).tobytes() for s in range(20)}
    # Caffe mirrors whenever mirror is set, in any phase
    assert outs == {img.astype(np.float32).tobytes(), img[:, :, ::-1].astype(np.float32).tobytes()}
    # no mirror, no crop: no random generator needed
    assert not T.DataTransformer(tparam(crop_size=1), TEST).needs_rand


def test_real_cifar_mean_file_loads():
    p = shared_path("data", "cifar10", "mean.binaryproto")
    m = T.load_mean_file(p)
    assert m.shape == (3, 32, 32) and m.dtype == np.float32
    np.testing.assert_allclose([m[c].mean() for c in range(3)], [125.3, 122.95, 113.87], atol=0.05)


# --------------------------------------------------------------------------- Data layer


def test_data_layer_batches_wrap_around_and_labels(tmp_path):
    path, imgs = small_db(tmp_path, n=7)
    layer = data_layer(path, batch_size=3, scale=0.5)
    assert layer.reshape([]) == [(3, 2, 3, 4), (3,)]
    got = [layer.forward([]) for _ in range(3)]
    order = [[0, 1, 2], [3, 4, 5], [6, 0, 1]]
    for (data, label), idx in zip(got, order):
        assert data.dtype == np.float32 and label.dtype == np.float32
        np.testing.assert_array_equal(label, idx)
        np.testing.assert_array_equal(data, np.stack([imgs[i] for i in idx]).astype(np.float32) * 0.5)
    layer.reset()
    np.testing.assert_array_equal(layer.forward([])[1], [0, 1, 2])
    layer.close()
    one = data_layer(path, batch_size=2, tops=("data",), prefetch=0)
    assert one.reshape([]) == [(2, 2, 3, 4)]
    assert len(one.forward([])) == 1


def test_data_layer_is_deterministic_with_a_seed_and_prefetch_does_not_matter(tmp_path):
    path, _ = small_db(tmp_path, n=5, shape=(3, 6, 6))

    def batches(seed, prefetch):
        layer = data_layer(path, batch_size=4, phase=TRAIN, seed=seed, prefetch=prefetch, crop_size=4, mirror=True)
        out = [layer.forward([])[0] for _ in range(4)]
        layer.reset()
        again = layer.forward([])[0]
        layer.close()
        return out, again

    a, a_again = batches(3, 0)
    b, _ = batches(3, 4)
    c, _ = batches(4, 2)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a[0], a_again)  # reset replays the same crops and flips
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))
    assert a[0].shape == (4, 3, 4, 4)


def test_data_layer_errors_name_the_layer_and_path(tmp_path):
    with pytest.raises(RistrettoError, match=r"layer 'data' \(Data\): no such LMDB: .*missing_lmdb"):
        data_layer(tmp_path / "missing_lmdb")
    import lmdb

    lmdb.open(str(tmp_path / "empty_lmdb")).close()
    with pytest.raises(RistrettoError, match="LMDB is empty"):
        data_layer(tmp_path / "empty_lmdb")
    lp = caffe_pb2.LayerParameter(name="d", type="Data", top=["data"])
    lp.data_param.source = "x"
    lp.data_param.batch_size = 1
    lp.data_param.backend = caffe_pb2.DataParameter.LEVELDB
    with pytest.raises(RistrettoError, match="LevelDB databases are not read"):
        create_layer(lp, TEST, Backend(np, seed=0)).setup([])


def test_data_layer_reports_a_corrupt_record_from_the_prefetch_thread(tmp_path):
    path = tmp_path / "bad"
    with LMDBWriter(path) as w:
        w.put("0", make_datum(np.zeros((1, 2, 2), np.uint8), 0).SerializeToString())
        w.put("1", b"\xff\xff\xff\xff")
    layer = data_layer(path, batch_size=2, prefetch=2)
    with pytest.raises(RistrettoError, match=r"not a Caffe Datum"):
        layer.forward([])
    layer.close()


def test_prefetcher_keeps_order_and_stops():
    counter = iter(range(1000))
    pf = Prefetcher(lambda: next(counter), depth=3)
    assert [pf.get() for _ in range(10)] == list(range(10))
    pf.stop()


# --------------------------------------------------------------------------- MNIST


@pytest.fixture(scope="module")
def mnist_db(tmp_path_factory):
    images = shared_path("data", "mnist", "t10k-images-idx3-ubyte.gz")
    labels = shared_path("data", "mnist", "t10k-labels-idx1-ubyte.gz")
    db = tmp_path_factory.mktemp("mnist") / "mnist_test_lmdb"
    invoke(["convert", "mnist", str(images), str(labels), str(db), "-q"])
    return images, labels, db


def test_mnist_converter_matches_caffe_bytes(mnist_db):
    images, labels, db = mnist_db
    raw = gzip.decompress(images.read_bytes())
    lab = gzip.decompress(labels.read_bytes())
    assert int.from_bytes(raw[:4], "big") == 2051 and int.from_bytes(lab[:4], "big") == 2049
    recs = read_datums(db)
    assert len(recs) == 10000
    assert [k for k, _ in recs[:3]] == [b"00000000", b"00000001", b"00000002"]
    assert recs[-1][0] == b"00009999"
    with LMDBReader(db) as r:
        for i, (key, value) in enumerate(r.items(50)):
            pix = raw[16 + 784 * i : 16 + 784 * (i + 1)]
            assert value == wire_datum(1, 28, 28, pix, lab[8 + i])
            hand = caffe_pb2.Datum(channels=1, height=28, width=28, data=pix, label=lab[8 + i])
            assert value == hand.SerializeToString()
    counts = np.bincount([d.label for _, d in recs], minlength=10)
    np.testing.assert_array_equal(counts, np.bincount(np.frombuffer(lab[8:], np.uint8), minlength=10))


def test_mnist_data_layer_and_mean(mnist_db, tmp_path):
    images, labels, db = mnist_db
    idx = read_idx(images)
    layer = data_layer(db, batch_size=100, scale=0.00390625)
    data, label = layer.forward([])
    np.testing.assert_array_equal(data[:, 0], idx[:100].astype(np.float32) * np.float32(0.00390625))
    np.testing.assert_array_equal(label, read_idx(labels)[:100])
    layer.close()
    out = tmp_path / "mnist_mean.binaryproto"
    result = invoke(["compute-mean", str(db), str(out)])
    assert "mean_value channel [0]" in result.output
    blob = caffe_pb2.BlobProto()
    blob.ParseFromString(out.read_bytes())
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 1, 28, 28)
    np.testing.assert_array_equal(np.asarray(blob.data, np.float32), (idx.sum(0, dtype=np.float64) / 10000).astype(np.float32).ravel())


def test_mnist_limit_and_bad_input_exit_2(tmp_path):
    images = shared_path("data", "mnist", "t10k-images-idx3-ubyte.gz")
    labels = shared_path("data", "mnist", "t10k-labels-idx1-ubyte.gz")
    db = tmp_path / "m"
    assert run_main(["convert", "mnist", str(images), str(labels), str(db), "--limit", "20", "-q"]) == 0
    assert len(read_datums(db)) == 20
    assert run_main(["convert", "mnist", str(images), str(labels), str(db), "-q"]) == 2  # exists
    assert run_main(["convert", "mnist", str(labels), str(images), str(tmp_path / "x"), "-q"]) == 2  # swapped
    assert run_main(["convert", "mnist", str(tmp_path / "nope"), str(labels), str(tmp_path / "y"), "-q"]) == 2
    assert run_main(["compute-mean", str(tmp_path / "no_db"), str(tmp_path / "m.binaryproto")]) == 2
    assert run_main(["convert", "mnist", str(images), str(labels), str(tmp_path / "z"), "--backend", "leveldb"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


# --------------------------------------------------------------------------- CIFAR-10


def test_cifar10_converter_on_synthetic_batches(tmp_path):
    rng = np.random.default_rng(0)
    files, records = [], []
    for f, n in enumerate((3, 2)):
        recs = [bytes([int(rng.integers(10))]) + rng.integers(0, 256, 3072, dtype=np.uint8).tobytes() for _ in range(n)]
        records += recs
        p = tmp_path / f"data_batch_{f + 1}.bin"
        p.write_bytes(b"".join(recs))
        files.append(str(p))
    db = tmp_path / "cifar_lmdb"
    invoke(["convert", "cifar10", *files, str(db), "-q"])
    with LMDBReader(db) as r:
        items = list(r.items())
    assert [k for k, _ in items] == [b"00000", b"00001", b"00002", b"00003", b"00004"]
    for (key, value), rec in zip(items, records):
        assert value == wire_datum(3, 32, 32, rec[1:], rec[0])
    # the R plane comes first, as in the CIFAR binary
    d = parse_datum(items[0][1])
    np.testing.assert_array_equal(datum_to_array(d)[0].ravel(), np.frombuffer(records[0][1:1025], np.uint8))
    (tmp_path / "bad.bin").write_bytes(b"\x00" * 3000)
    assert run_main(["convert", "cifar10", str(tmp_path / "bad.bin"), str(tmp_path / "bad_lmdb"), "-q"]) == 2
    assert not (tmp_path / "bad_lmdb").exists()


# --------------------------------------------------------------------------- imageset


@pytest.fixture
def cifar_list(tmp_path):
    root = shared_path("data", "cifar10", "test_jpg")
    names = [(f"{c}/000{i}.jpg", k) for k, c in enumerate(CLASSES[:3]) for i in range(2)]
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{n} {k}\n" for n, k in names))
    return root, lst, names


def test_imageset_raw_bgr_rgb_and_keys(cifar_list, tmp_path):
    root, lst, names = cifar_list
    db = tmp_path / "bgr"
    invoke(["convert", "imageset", str(root), str(lst), str(db), "-q"])
    recs = read_datums(db)
    assert [k.decode() for k, _ in recs] == [f"{i:08d}_{n}" for i, (n, _) in enumerate(names)]
    for (key, d), (name, label) in zip(recs, names):
        bgr = cv2.imread(str(root / name), cv2.IMREAD_COLOR)
        chw = bgr.transpose(2, 0, 1)
        assert d.SerializeToString() == wire_datum(3, 32, 32, chw.tobytes(), label, encoded=False)
    rgb_db = tmp_path / "rgb"
    assert run_main(["convert", "imageset", str(root), str(lst), str(rgb_db), "--channel_order=RGB", "-q"]) == 0
    for (_, d), (_, e) in zip(read_datums(rgb_db), recs):
        np.testing.assert_array_equal(datum_to_array(d), datum_to_array(e)[::-1])


def test_imageset_encoded_gray_shuffle(cifar_list, tmp_path):
    root, lst, names = cifar_list
    enc = tmp_path / "enc"
    invoke(["convert", "imageset", str(root), str(lst), str(enc), "--encoded", "-q"])
    for (_, d), (name, label) in zip(read_datums(enc), names):
        assert d.encoded and d.label == label and d.data == (root / name).read_bytes()
        np.testing.assert_array_equal(datum_to_array(d), cv2.imread(str(root / name)).transpose(2, 0, 1))
    png = tmp_path / "png"
    assert run_main(["convert", "imageset", str(root), str(lst), str(png), "--encode_type", "png", "-q"]) == 0
    for (_, d), (name, _) in zip(read_datums(png), names):
        assert d.data[:8] == b"\x89PNG\r\n\x1a\n"
        np.testing.assert_array_equal(datum_to_array(d), cv2.imread(str(root / name)).transpose(2, 0, 1))
    gray = tmp_path / "gray"
    invoke(["convert", "imageset", str(root), str(lst), str(gray), "--gray", "-q"])
    d = read_datums(gray)[0][1]
    np.testing.assert_array_equal(datum_to_array(d)[0], cv2.imread(str(root / names[0][0]), cv2.IMREAD_GRAYSCALE))
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    for s in (s1, s2):
        invoke(["convert", "imageset", str(root), str(lst), str(s), "--shuffle", "--seed", "7", "-q"])
    k1 = [k for k, _ in read_datums(s1)]
    assert k1 == [k for k, _ in read_datums(s2)]
    assert sorted(k.decode().split("_", 1)[1] for k in k1) == sorted(n for n, _ in names)


def test_imageset_resize_imagenet_samples(tmp_path):
    root = shared_path("data", "imagenet", "sample_1000")
    names = sorted(p.name for p in root.glob("*.JPEG"))[:3]
    synsets = [l.split()[0] for l in shared_path("data", "imagenet", "synset_words.txt").read_text().splitlines()]
    lst = tmp_path / "val.txt"
    lst.write_text("".join(f"{n} {synsets.index(n[:9])}\n" for n in names))
    db = tmp_path / "inet"
    assert run_main(["convert", "imageset", str(root) + "/", str(lst), str(db), "--resize_height=40",
                     "--resize_width", "48", "--check_size", "-q"]) == 0
    recs = read_datums(db)
    for (_, d), n in zip(recs, names):
        assert (d.channels, d.height, d.width) == (3, 40, 48)
        want = cv2.resize(cv2.imread(str(root / n)), (48, 40), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(datum_to_array(d), want.transpose(2, 0, 1))
        assert d.label == synsets.index(n[:9])
    # different sizes without resizing fail --check-size, and nothing is left behind
    assert run_main(["convert", "imageset", str(root), str(lst), str(tmp_path / "mixed"), "--check-size", "-q"]) == 2
    assert not (tmp_path / "mixed").exists()
    pil = tmp_path / "pil"
    invoke(["convert", "imageset", str(root), str(lst), str(pil), "--resize-height", "40", "--resize-width", "48",
            "--resize-method", "pillow", "-q"])
    assert datum_to_array(read_datums(pil)[0][1]).shape == (3, 40, 48)


def test_imageset_missing_image_leaves_no_db(cifar_list, tmp_path):
    root, lst, names = cifar_list
    lst.write_text(lst.read_text() + "airplane/no_such.jpg 0\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert run_main(["convert", "imageset", str(root), str(lst), str(tmp_path / "db"), "-q"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert run_main(["convert", "imageset", str(root), str(lst), str(tmp_path / "db"), "--skip-unreadable", "-q"]) == 0
    assert len(read_datums(tmp_path / "db")) == len(names)
    assert run_main(["convert", "imageset", str(root), str(lst), str(tmp_path / "e"), "--encoded",
                     "--channel-order", "RGB", "-q"]) == 2


def test_imagefolder(tmp_path):
    root = tmp_path / "imgs"
    for c, color in (("b_blue", (255, 0, 0)), ("a_red", (0, 0, 255))):
        (root / c).mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(root / c / f"{i}.png"), np.full((4, 5, 3), color, np.uint8))
    db = tmp_path / "folder_db"
    invoke(["convert", "imagefolder", str(root), str(db), "-q"])
    recs = read_datums(db)
    assert [k.decode() for k, _ in recs] == ["00000000_a_red/0.png", "00000001_a_red/1.png",
                                             "00000002_b_blue/0.png", "00000003_b_blue/1.png"]
    assert [d.label for _, d in recs] == [0, 0, 1, 1]
    assert datum_to_array(recs[0][1])[:, 0, 0].tolist() == [0, 0, 255]  # B, G, R of red


# --------------------------------------------------------------------------- compute-mean


def test_compute_mean_small_db(tmp_path):
    rng = np.random.default_rng(5)
    imgs = rng.integers(0, 256, (6, 3, 4, 5), dtype=np.uint8)
    db = tmp_path / "db"
    write_datums(db, ((f"{i}", make_datum(imgs[i], 0)) for i in range(6)))
    mean, n = compute_mean(db)
    assert n == 6
    np.testing.assert_array_equal(mean, (imgs.sum(0, dtype=np.float64) / 6).astype(np.float32))
    out = tmp_path / "mean.binaryproto"
    assert run_main(["compute-mean", str(db), str(out), "-q"]) == 0
    from ristretto_cli.caffe.blobproto import read_binaryproto

    np.testing.assert_array_equal(read_binaryproto(out), mean[None])
    np.testing.assert_array_equal(T.load_mean_file(out), mean)
    assert run_main(["compute_mean", str(db), str(tmp_path / "mean.npy"), "-q"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "mean.npy"), mean)
    # records of different sizes are an error
    mixed = tmp_path / "mixed"
    write_datums(mixed, [("a", make_datum(imgs[0], 0)), ("b", make_datum(imgs[0][:, :2], 0))])
    assert run_main(["compute-mean", str(mixed), str(tmp_path / "m2.binaryproto"), "-q"]) == 2
    assert not (tmp_path / "m2.binaryproto").exists()


# --------------------------------------------------------------------------- ImageData


def image_data_layer(lst, root, batch_size=2, phase=TEST, seed=0, **ip):
    lp = caffe_pb2.LayerParameter(name="img", type="ImageData", top=["data", "label"])
    lp.image_data_param.source = str(lst)
    lp.image_data_param.root_folder = str(root)
    lp.image_data_param.batch_size = batch_size
    for k, v in ip.items():
        setattr(lp.image_data_param, k, v)
    layer = create_layer(lp, phase, Backend(np, seed=seed))
    layer.setup([])
    return layer


def test_image_data_layer(cifar_list):
    root, lst, names = cifar_list
    layer = image_data_layer(lst, root, batch_size=4, new_height=20, new_width=24)
    assert layer.reshape([]) == [(4, 3, 20, 24), (4,)]
    d1, l1 = layer.forward([])
    d2, l2 = layer.forward([])
    np.testing.assert_array_equal(np.concatenate([l1, l2]), [k for _, k in names] + [names[0][1], names[1][1]])
    want = cv2.resize(cv2.imread(str(root / names[4][0])), (24, 20), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(d2[0], want.transpose(2, 0, 1).astype(np.float32))
    layer.close()
    a = image_data_layer(lst, root, batch_size=6, shuffle=True, seed=11)
    b = image_data_layer(lst, root, batch_size=6, shuffle=True, seed=11)
    la, lb = a.forward([])[1], b.forward([])[1]
    np.testing.assert_array_equal(la, lb)
    assert sorted(la.tolist()) == sorted(k for _, k in names)
    gray = image_data_layer(lst, root, batch_size=1, is_color=False)
    assert gray.reshape([])[0] == (1, 1, 32, 32)
    for l in (a, b, gray):
        l.close()


def test_image_list_parsing(tmp_path):
    p = tmp_path / "l.txt"
    p.write_text("a b/c d.jpg 3\n\nx.png\t4\n")
    assert read_image_list(p) == [("a b/c d.jpg", 3), ("x.png", 4)]
    p.write_text("x.png cat\n")
    with pytest.raises(RistrettoError, match=r"l.txt:1: label 'cat'"):
        read_image_list(p)
    with pytest.raises(RistrettoError, match="no such image list"):
        read_image_list(tmp_path / "none.txt")


def test_data_layer_inside_a_net(tmp_path, monkeypatch):
    from ristretto_cli.caffe.prototxt import parse_net_text
    from ristretto_cli.net.net import Net

    small_db(tmp_path, n=5, name="rel_lmdb")
    monkeypatch.chdir(tmp_path)  # a relative source is resolved against the working directory
    text = """
    layer { name: "d" type: "Data" top: "data" top: "label" include { phase: TEST }
            transform_param { mean_value: 1 scale: 2 } data_param { source: "rel_lmdb" batch_size: 2 backend: LMDB } }
    layer { name: "flat" type: "Flatten" bottom: "data" top: "flat" }
    """
    net = Net(parse_net_text(text), "TEST", Backend(np, seed=0))
    assert net.blob_shapes["data"] == (2, 2, 3, 4) and net.blob_shapes["label"] == (2,)
    first = net.forward()
    np.testing.assert_array_equal(first["label"], [0, 1])
    np.testing.assert_array_equal(net.forward()["label"], [2, 3])
    net.layer("d").reset()
    again = net.forward()
    np.testing.assert_array_equal(again["flat"], first["flat"])
    np.testing.assert_array_equal(again["flat"][0], (np.arange(24, dtype=np.float32) - 1) * 2)
    net.close()  # stops the prefetch thread and closes the database
    assert net.layer("d").source is None and net.layer("d")._prefetcher is None
    net.close()  # idempotent
