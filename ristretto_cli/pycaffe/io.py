"""pycaffe's ``caffe.io``: input preprocessing, image loading and blob/datum conversions.

:class:`Transformer` does pycaffe's steps in pycaffe's order. ``preprocess(name, image)``
with ``image`` H x W x K:

1. convert to float32;
2. resize to the input blob's H x W (:func:`resize_image`) when the size differs;
3. transpose (``set_transpose``, e.g. (2, 0, 1): H x W x K -> K x H x W);
4. reorder the channels (``set_channel_swap``, e.g. (2, 1, 0): RGB -> BGR);
5. multiply by the raw scale (``set_raw_scale``, e.g. 255 for [0, 1] images);
6. subtract the mean (``set_mean``: per channel, or per pixel);
7. multiply by the input scale (``set_input_scale``).

``deprocess`` undoes them in reverse. One difference: pycaffe's ``preprocess`` scales a
float32 input in place when no resize or channel swap made a copy; ours never changes
the caller's array.

:func:`load_image` reads with Pillow what pycaffe reads with scikit-image: float32 in
[0, 1], H x W x 3 RGB (H x W x 1 with ``color=False``), alpha dropped, palette and
CMYK images converted to RGB, no EXIF rotation (skimage applies none either).
:func:`resize_image` interpolates with NumPy (order 0 or 1; see its docstring for how it
differs from scikit-image's).
"""
from __future__ import annotations

import numpy as np

from ..errors import RistrettoError

__all__ = ["Transformer", "array_to_blobproto", "array_to_datum", "arraylist_to_blobprotovector_str",
           "blobproto_to_array", "blobprotovector_str_to_arraylist", "datum_to_array", "load_image",
           "oversample", "resize_image"]


# ----------------------------------------------------------------------------- proto / datum / ndarray

def blobproto_to_array(blob, return_diff: bool = False) -> np.ndarray:
    """A BlobProto's data (or diff) as an array of its shape (legacy num/channels/height/width too)."""
    values = np.array(blob.diff if return_diff else blob.data)
    if blob.HasField("num") or blob.HasField("channels") or blob.HasField("height") or blob.HasField("width"):
        return values.reshape(blob.num, blob.channels, blob.height, blob.width)
    return values.reshape(tuple(blob.shape.dim))


def array_to_blobproto(arr, diff=None):
    """An N-d array (and optionally its diff) as a BlobProto."""
    from ..proto import caffe_pb2

    blob = caffe_pb2.BlobProto()
    arr = np.asarray(arr)
    blob.shape.dim.extend(arr.shape)
    blob.data.extend(arr.astype(float).flat)
    if diff is not None:
        blob.diff.extend(np.asarray(diff).astype(float).flat)
    return blob


def arraylist_to_blobprotovector_str(arraylist) -> bytes:
    """Arrays as a serialized BlobProtoVector."""
    from ..proto import caffe_pb2

    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend([array_to_blobproto(a) for a in arraylist])
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(data: bytes) -> list:
    """A serialized BlobProtoVector as a list of arrays."""
    from ..proto import caffe_pb2

    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(data)
    return [blobproto_to_array(b) for b in vec.blobs]


def array_to_datum(arr, label=None):
    """A C x H x W array as a Datum: uint8 as bytes, anything else as float_data."""
    from ..proto import caffe_pb2

    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ValueError("Incorrect array shape.")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = arr.shape
    if arr.dtype == np.uint8:
        datum.data = arr.tobytes()
    else:
        datum.float_data.extend(arr.astype(float).flat)
    if label is not None:
        datum.label = label
    return datum


def datum_to_array(datum) -> np.ndarray:
    """A Datum's values as C x H x W (uint8 for byte data, float otherwise); the label is
    ``datum.label``."""
    if len(datum.data):
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(datum.channels, datum.height, datum.width)
    return np.array(datum.float_data).astype(float).reshape(datum.channels, datum.height, datum.width)


# ----------------------------------------------------------------------------- preprocessing

class Transformer:
    """Prepare images for a net's input blobs, as pycaffe's ``caffe.io.Transformer``.

    ``inputs``: ``{blob name: blob shape}``, e.g. ``{"data": net.blobs["data"].data.shape}``.
    The steps and their order are in the module docstring.
    """

    def __init__(self, inputs: dict):
        self.inputs = {k: tuple(int(d) for d in v) for k, v in inputs.items()}
        self.transpose: dict = {}
        self.channel_swap: dict = {}
        self.raw_scale: dict = {}
        self.mean: dict = {}
        self.input_scale: dict = {}

    def _check_input(self, in_: str) -> None:
        if in_ not in self.inputs:
            raise RistrettoError(f"{in_} is not one of the net inputs: {list(self.inputs)}")

    def preprocess(self, in_: str, data) -> np.ndarray:
        """An H' x W' x K image as the K x H x W array blob ``in_`` wants (steps 1-7)."""
        self._check_input(in_)
        caffe_in = np.array(data, dtype=np.float32)  # a copy: the caller's array stays as it is
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        in_dims = self.inputs[in_][2:]
        if tuple(caffe_in.shape[:2]) != tuple(in_dims):
            caffe_in = resize_image(caffe_in, in_dims)
        if transpose is not None:
            caffe_in = caffe_in.transpose(transpose)
        if channel_swap is not None:
            caffe_in = caffe_in[list(channel_swap), :, :]
        if raw_scale is not None:
            caffe_in *= raw_scale
        if mean is not None:
            caffe_in -= mean
        if input_scale is not None:
            caffe_in *= input_scale
        return caffe_in

    def deprocess(self, in_: str, data) -> np.ndarray:
        """Undo :meth:`preprocess` (all but the resize): a blob item back to an image."""
        self._check_input(in_)
        decaf_in = np.array(data, copy=True).squeeze()
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        if input_scale is not None:
            decaf_in /= input_scale
        if mean is not None:
            decaf_in += mean
        if raw_scale is not None:
            decaf_in /= raw_scale
        if channel_swap is not None:
            decaf_in = decaf_in[np.argsort(channel_swap), :, :]
        if transpose is not None:
            decaf_in = decaf_in.transpose(np.argsort(transpose))
        return decaf_in

    def set_transpose(self, in_: str, order) -> None:
        """The order of the axes, e.g. (2, 0, 1) turns H x W x K into K x H x W."""
        self._check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise RistrettoError("Transpose order needs to have the same number of dimensions as the input.")
        self.transpose[in_] = tuple(order)

    def set_channel_swap(self, in_: str, order) -> None:
        """The order to take the channels in, after the transpose: (2, 1, 0) maps RGB to BGR."""
        self._check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise RistrettoError("Channel swap needs to have the same number of dimensions as the input channels.")
        self.channel_swap[in_] = tuple(order)

    def set_raw_scale(self, in_: str, scale) -> None:
        """Multiply the (transposed, swapped) input by ``scale`` before the mean is
        subtracted: 255 for nets trained on [0, 255] pixels fed [0, 1] images."""
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_: str, mean) -> None:
        """The mean to subtract: one value per channel (shape (K,)), or per pixel (K x H x W,
        resized to the blob's H x W when it differs, as pycaffe does)."""
        self._check_input(in_)
        mean = np.asarray(mean)
        ms = mean.shape
        if mean.ndim == 1:
            if ms[0] != self.inputs[in_][1]:
                raise ValueError("Mean channels incompatible with input.")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            if len(ms) == 2:
                ms = (1,) + ms
            if len(ms) != 3:
                raise ValueError("Mean shape invalid")
            if ms != self.inputs[in_][1:]:
                in_shape = self.inputs[in_][1:]
                m_min, m_max = mean.min(), mean.max()
                normal = (mean - m_min) / (m_max - m_min)
                mean = resize_image(normal.reshape(ms).transpose((1, 2, 0)), in_shape[1:]).transpose((2, 0, 1)) \
                    * (m_max - m_min) + m_min
        self.mean[in_] = mean

    def set_input_scale(self, in_: str, scale) -> None:
        """Multiply by ``scale`` after the mean subtraction (raw_scale comes before it)."""
        self._check_input(in_)
        self.input_scale[in_] = scale


# ----------------------------------------------------------------------------- images

_TO_MODE = {"PA": "RGBA", "1": "L", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}
#: what an image mode's full scale is (skimage's img_as_float divides by the dtype's maximum)
_FULL_SCALE = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I": 2147483647.0, "F": 1.0}


def load_image(filename, color: bool = True) -> np.ndarray:
    """An image file as float32 in [0, 1]: H x W x 3 RGB, or H x W x 1 with ``color=False``
    (a colour image is then converted to grey as scikit-image's ``rgb2gray``: 0.2125 R +
    0.7154 G + 0.0721 B). 16-bit images are divided by 65535, 8-bit ones by 255."""
    from PIL import Image

    with Image.open(filename) as im:
        im.load()
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode in _TO_MODE:
            im = im.convert(_TO_MODE[im.mode])
        mode = im.mode
        arr = np.asarray(im)
    img = arr.astype(np.float64) / _FULL_SCALE.get(mode, 255.0)
    if img.ndim == 3 and img.shape[2] in (2, 4):  # drop alpha, as pycaffe does
        img = img[:, :, :img.shape[2] - 1]
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if not color and img.ndim == 3:
        img = img[:, :, 0] * 0.2125 + img[:, :, 1] * 0.7154 + img[:, :, 2] * 0.0721
    img = img.astype(np.float32)
    if img.ndim == 2:
        img = img[:, :, np.newaxis]
        if color:
            img = np.tile(img, (1, 1, 3))
    return img


def _axis_weights(n_in: int, n_out: int, order: int):
    """Source indices and weights along one axis: pixel centres aligned (half-pixel), edges
    replicated."""
    pos = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    if order == 0:
        idx = np.clip(np.floor(pos + 0.5).astype(np.int64), 0, n_in - 1)
        return idx, idx, np.zeros(n_out)
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, pos - lo


def resize_image(im, new_dims, interp_order: int = 1) -> np.ndarray:
    """An H x W x K image resized to ``new_dims`` = (height, width), float32.

    ``interp_order`` 1: bilinear, 0: nearest neighbour (higher orders are refused). Pixel
    centres are aligned (half-pixel convention) and edges replicated; no smoothing
    before downsampling. pycaffe calls scikit-image's ``resize(..., mode='constant')``,
    whose result depends on its version (newer ones smooth before downsampling and
    blend upsampled borders with 0); on downsampling without smoothing both agree.
    A constant image stays that constant, as in pycaffe.
    """
    if interp_order not in (0, 1):
        raise RistrettoError(f"resize_image: interp_order {interp_order} is not supported; use 0 or 1")
    im = np.asarray(im)
    if im.ndim != 3:
        raise RistrettoError(f"resize_image: expected an H x W x K image, got shape {im.shape}")
    new_h, new_w = (int(d) for d in new_dims)
    if im.size and im.min() == im.max():
        out = np.empty((new_h, new_w, im.shape[-1]), dtype=np.float32)
        out.fill(im.min())
        return out
    x = im.astype(np.float64)
    r0, r1, wr = _axis_weights(x.shape[0], new_h, interp_order)
    c0, c1, wc = _axis_weights(x.shape[1], new_w, interp_order)
    wr = wr[:, None, None]
    rows = x[r0] * (1 - wr) + x[r1] * wr
    wc = wc[None, :, None]
    out = rows[:, c0] * (1 - wc) + rows[:, c1] * wc
    return out.astype(np.float32)


def oversample(images, crop_dims) -> np.ndarray:
    """The four corner crops and the centre crop of each image, then the same five
    mirrored: (10 N) x h x w x K for N images, as pycaffe's ``oversample``."""
    im_shape = np.array(images[0].shape)
    crop_dims = np.array(crop_dims)
    im_center = im_shape[:2] / 2.0
    h_indices = (0, im_shape[0] - crop_dims[0])
    w_indices = (0, im_shape[1] - crop_dims[1])
    crops_ix = np.empty((5, 4), dtype=int)
    curr = 0
    for i in h_indices:
        for j in w_indices:
            crops_ix[curr] = (i, j, i + crop_dims[0], j + crop_dims[1])
            curr += 1
    crops_ix[4] = np.tile(im_center, (1, 2)) + np.concatenate([-crop_dims / 2.0, crop_dims / 2.0])
    crops_ix = np.tile(crops_ix, (2, 1))
    crops = np.empty((10 * len(images), crop_dims[0], crop_dims[1], im_shape[-1]), dtype=np.float32)
    ix = 0
    for im in images:
        for crop in crops_ix:
            crops[ix] = im[crop[0]:crop[2], crop[1]:crop[3], :]
            ix += 1
        crops[ix - 5:ix] = crops[ix - 5:ix, :, ::-1, :]
    return crops
