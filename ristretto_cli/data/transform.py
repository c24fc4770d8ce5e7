"""Images in, network input out: decoding, resizing and Caffe's DataTransformer.

Images travel as H x W x C uint8 arrays in OpenCV's channel order (B,G,R for
colour), and become C x H x W planes on their way into a Datum or a batch, as in
Caffe. OpenCV (``cv2``) is used when importable, because that is what Caffe uses;
Pillow is the fallback (JPEG decoding agrees; resizing and grey conversion can
differ by a level or so).

``DataTransformer`` follows ``caffe/src/caffe/data_transformer.cpp``:

    out = (x[crop] - mean[crop]) * scale        (mirrored left-right if drawn)

with ``mean`` either the ``mean_file`` image (cropped at the same offset as the
input) or one ``mean_value`` per channel (a single value is used for all).
Random draws, in Caffe's order: mirror (only when ``mirror`` is set; any phase),
then the crop offsets (TRAIN only; TEST crops the centre).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..caffe.blobproto import read_binaryproto
from ..errors import RistrettoError

try:  # OpenCV is optional; Caffe used it, so it is the reference behaviour
    import cv2  # type: ignore
except Exception:  # pragma: no cover - depends on the environment
    cv2 = None

HAVE_CV2 = cv2 is not None
TRAIN, TEST = 0, 1

COLOR_MODES = ("native", "color", "gray")


# --------------------------------------------------------------------------- images


def _as_hwc(img: np.ndarray) -> np.ndarray:
    return img[:, :, None] if img.ndim == 2 else img


def hwc_to_chw(img: np.ndarray) -> np.ndarray:
    """H x W x C (or H x W) -> C x H x W, contiguous."""
    return np.ascontiguousarray(_as_hwc(img).transpose(2, 0, 1))


def chw_to_hwc(arr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(arr).transpose(1, 2, 0))


def _check_color(color: str) -> None:
    if color not in COLOR_MODES:
        raise ValueError(f"color must be one of {COLOR_MODES}, got {color!r}")


def _pil_to_bgr(im, color: str, where: str) -> np.ndarray:
    from PIL import ImageOps

    if color != "native":
        im = ImageOps.exif_transpose(im)  # OpenCV's IMREAD_COLOR/GRAYSCALE honour EXIF orientation
    if color == "gray":
        if im.mode != "L":
            im = im.convert("L")
        return np.asarray(im, dtype=np.uint8)[:, :, None]
    if color == "color":
        if im.mode != "RGB":
            im = im.convert("RGB")
        return np.ascontiguousarray(np.asarray(im, dtype=np.uint8)[:, :, ::-1])
    # native: keep the number of channels of the file
    if im.mode in ("1", "L"):
        return np.asarray(im.convert("L"), dtype=np.uint8)[:, :, None]
    if im.mode in ("I;16", "I;16B", "I", "F"):
        raise RistrettoError(f"{where}: {im.mode} images are not supported (8-bit images only)")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        a = np.asarray(im.convert("RGBA"), dtype=np.uint8)
        return np.ascontiguousarray(a[:, :, [2, 1, 0, 3]])
    a = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(a[:, :, ::-1])


def decode_image(buf: bytes, color: str = "color", where: str = "image") -> np.ndarray:
    """Decode an image file held in memory to H x W x C uint8, B,G,R(,A) order.

    ``color``: "color" -> 3 channels, "gray" -> 1, "native" -> as stored (OpenCV's
    IMREAD_COLOR / IMREAD_GRAYSCALE / IMREAD_UNCHANGED).
    """
    _check_color(color)
    if cv2 is not None:
        flag = {"native": cv2.IMREAD_UNCHANGED, "color": cv2.IMREAD_COLOR, "gray": cv2.IMREAD_GRAYSCALE}[color]
        img = cv2.imdecode(np.frombuffer(bytes(buf), dtype=np.uint8), flag)
        if img is None:
            raise RistrettoError(f"{where}: cannot decode image data ({len(buf)} bytes)")
        if img.dtype != np.uint8:
            raise RistrettoError(f"{where}: {img.dtype} images are not supported (8-bit images only)")
        return _as_hwc(img)
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(io.BytesIO(bytes(buf)))
        if color == "gray" and im.format == "JPEG":
            im.draft("L", im.size)  # libjpeg's own grey output, as OpenCV gets it
        im.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise RistrettoError(f"{where}: cannot decode image data ({exc})") from exc
    return _pil_to_bgr(im, color, where)


def read_image_file(path, color: str = "color") -> np.ndarray:
    """Read an image file to H x W x C uint8 (B,G,R); see :func:`decode_image`."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise RistrettoError(f"{p}: no such image file") from None
    except OSError as exc:
        raise RistrettoError(f"{p}: cannot read image ({exc.strerror or exc})") from exc
    return decode_image(data, color=color, where=str(p))


def default_resize_method() -> str:
    return "opencv" if HAVE_CV2 else "pillow"


def resize_image(img: np.ndarray, height: int, width: int, method: str | None = None) -> np.ndarray:
    """Resize H x W x C uint8 to ``height`` x ``width``.

    ``method``: "opencv" (cv2.resize INTER_LINEAR, what Caffe's ReadImageToCVMat
    does) or "pillow" (PIL bilinear, which low-pass filters when shrinking).
    """
    method = method or default_resize_method()
    img = _as_hwc(img)
    if img.shape[0] == height and img.shape[1] == width:
        return img
    if method == "opencv":
        if cv2 is None:
            raise RistrettoError("resize method 'opencv' needs the opencv-python package; use 'pillow'")
        out = cv2.resize(img, (int(width), int(height)), interpolation=cv2.INTER_LINEAR)
        return _as_hwc(out)
    if method == "pillow":
        from PIL import Image

        c = img.shape[2]
        if c == 1:
            im = Image.fromarray(img[:, :, 0], mode="L")
        elif c == 3:
            im = Image.fromarray(np.ascontiguousarray(img), mode="RGB")
        elif c == 4:
            im = Image.fromarray(np.ascontiguousarray(img), mode="RGBA")
        else:
            raise RistrettoError(f"cannot resize an image with {c} channels")
        return _as_hwc(np.asarray(im.resize((int(width), int(height)), Image.BILINEAR), dtype=np.uint8))
    raise RistrettoError(f"unknown resize method {method!r}; use 'opencv' or 'pillow'")


def read_image(path, height: int = 0, width: int = 0, is_color: bool = True, method: str | None = None) -> np.ndarray:
    """Caffe's ``ReadImageToCVMat``: read as colour (3 channels, BGR) or grey, then
    resize when both ``height`` and ``width`` are positive."""
    img = read_image_file(path, color="color" if is_color else "gray")
    if height > 0 and width > 0:
        img = resize_image(img, height, width, method)
    return img


def encode_image(img: np.ndarray, ext: str, where: str = "image") -> bytes:
    """Encode H x W x C uint8 (B,G,R) as an image file; ``ext`` like "png" or ".jpg"."""
    ext = "." + ext.lower().lstrip(".")
    img = _as_hwc(img)
    if cv2 is not None:
        ok, buf = cv2.imencode(ext, img if img.shape[2] != 1 else img[:, :, 0])
        if not ok:
            raise RistrettoError(f"{where}: cannot encode as {ext}")
        return buf.tobytes()
    from PIL import Image

    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".ppm": "PPM", ".pgm": "PPM"}.get(ext)
    if fmt is None:
        raise RistrettoError(f"{where}: cannot encode as {ext} without OpenCV")
    c = img.shape[2]
    if c == 1:
        im = Image.fromarray(img[:, :, 0], mode="L")
    elif c == 3:
        im = Image.fromarray(np.ascontiguousarray(img[:, :, ::-1]), mode="RGB")
    else:
        im = Image.fromarray(np.ascontiguousarray(img[:, :, [2, 1, 0, 3]]), mode="RGBA")
    out = io.BytesIO()
    im.save(out, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue()


# --------------------------------------------------------------------------- mean file


def load_mean_file(path) -> np.ndarray:
    """A ``.binaryproto`` mean image as float32 C x H x W."""
    p = Path(path)
    if not p.exists():
        raise RistrettoError(f"mean_file {p}: no such file")
    arr = np.asarray(read_binaryproto(str(p)), dtype=np.float32)
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim < 3:
        arr = arr.reshape((1,) * (3 - arr.ndim) + arr.shape)
    if arr.ndim != 3:
        raise RistrettoError(f"mean_file {p}: expected a 1 x C x H x W blob, got shape {arr.shape}")
    return arr


# --------------------------------------------------------------------------- transformer


class DataTransformer:
    """Caffe's TransformationParameter applied to C x H x W images.

    ``rng`` (a NumPy Generator) drives mirror and random crops; it may be given per
    call so a prefetch thread can use its own generator.
    """

    def __init__(self, param=None, phase: int = TEST, rng: np.random.Generator | None = None, where: str = "transform_param"):
        self.phase = phase
        self.rng = rng
        self.where = where
        has = (lambda f: param.HasField(f)) if param is not None else (lambda f: False)
        self.scale = float(param.scale) if param is not None else 1.0
        self.crop_size = int(param.crop_size) if param is not None else 0
        self.mirror = bool(param.mirror) if param is not None else False
        self.mean_values = [float(v) for v in param.mean_value] if param is not None else []
        self.mean_file = param.mean_file if has("mean_file") else ""
        self.force_color = bool(param.force_color) if param is not None else False
        self.force_gray = bool(param.force_gray) if param is not None else False
        if self.mean_file and self.mean_values:
            raise RistrettoError(f"{where}: cannot specify mean_file and mean_value at the same time")
        if self.force_color and self.force_gray:
            raise RistrettoError(f"{where}: cannot set both force_color and force_gray")
        if self.crop_size < 0:
            raise RistrettoError(f"{where}: crop_size must be >= 0, got {self.crop_size}")
        self._mean: np.ndarray | None = None

    # -- configuration ----------------------------------------------------
    @property
    def color_mode(self) -> str:
        """How encoded datums are decoded: force_color / force_gray / native."""
        return "color" if self.force_color else "gray" if self.force_gray else "native"

    @property
    def needs_rand(self) -> bool:
        return self.mirror or (self.phase == TRAIN and self.crop_size > 0)

    def mean_image(self) -> np.ndarray | None:
        if self.mean_file and self._mean is None:
            self._mean = load_mean_file(self.mean_file)
        return self._mean

    def output_shape(self, channels: int, height: int, width: int) -> tuple[int, int, int]:
        """Shape of one transformed image (Caffe's InferBlobShape), with checks."""
        c = self.crop_size
        if c and (height < c or width < c):
            raise RistrettoError(f"{self.where}: crop_size {c} is larger than the {height}x{width} input")
        self._check_mean(channels, height, width)
        return (channels, c or height, c or width)

    def _check_mean(self, channels: int, height: int, width: int) -> None:
        mean = self.mean_image()
        if mean is not None and mean.shape != (channels, height, width):
            raise RistrettoError(
                f"{self.where}: mean_file {self.mean_file} is {'x'.join(map(str, mean.shape))}, "
                f"the input is {channels}x{height}x{width}"
            )
        if self.mean_values and len(self.mean_values) not in (1, channels):
            raise RistrettoError(
                f"{self.where}: specify either 1 mean_value or as many as channels ({channels}), "
                f"got {len(self.mean_values)}"
            )

    # -- the transform ----------------------------------------------------
    def draw(self, height: int, width: int, rng: np.random.Generator | None = None) -> tuple[bool, int, int]:
        """(do_mirror, h_off, w_off) for one image, drawing like Caffe does."""
        rng = rng if rng is not None else self.rng
        c = self.crop_size
        if self.needs_rand and rng is None:
            raise RistrettoError(f"{self.where}: mirror / random crop need a random generator")
        do_mirror = bool(self.mirror and rng.integers(2))
        h_off = w_off = 0
        if c:
            if self.phase == TRAIN:
                h_off = int(rng.integers(height - c + 1))
                w_off = int(rng.integers(width - c + 1))
            else:
                h_off = (height - c) // 2
                w_off = (width - c) // 2
        return do_mirror, h_off, w_off

    def apply(self, img: np.ndarray, do_mirror: bool, h_off: int, w_off: int) -> np.ndarray:
        """The deterministic part: crop at (h_off, w_off), subtract, scale, mirror."""
        ch, h, w = img.shape
        oc, oh, ow = self.output_shape(ch, h, w)
        x = np.asarray(img[:, h_off : h_off + oh, w_off : w_off + ow], dtype=np.float32)
        mean = self.mean_image()
        if mean is not None:
            x = x - mean[:, h_off : h_off + oh, w_off : w_off + ow]
        elif self.mean_values:
            mv = self.mean_values if len(self.mean_values) == ch else self.mean_values * ch
            x = x - np.asarray(mv, dtype=np.float32)[:, None, None]
        x = x * np.float32(self.scale)
        if do_mirror:
            x = x[:, :, ::-1]
        return np.ascontiguousarray(x, dtype=np.float32)

    def transform(self, img: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Transform one C x H x W image (uint8 or float) to float32."""
        img = np.asarray(img)
        if img.ndim != 3:
            raise RistrettoError(f"{self.where}: expected a C x H x W image, got shape {img.shape}")
        self.output_shape(*img.shape)  # checks before drawing
        do_mirror, h_off, w_off = self.draw(img.shape[1], img.shape[2], rng)
        return self.apply(img, do_mirror, h_off, w_off)
