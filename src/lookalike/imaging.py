"""Safe image decoding: EXIF orientation, every mode to RGB (alpha on white), a pixel cap against
decompression bombs, content hashes, and paths that cannot escape the catalogue folder."""
from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image, ImageOps

DEFAULT_MAX_PIXELS = 40_000_000


class ImageTooLargeError(ValueError):
    """The decoded image would exceed the pixel cap."""


class UnsafePathError(ValueError):
    """A catalogue path points outside the catalogue folder."""


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def file_hash(path: Path) -> str:
    return content_hash(Path(path).read_bytes())


def safe_join(root: Path, rel: str) -> Path:
    """``root / rel`` resolved, refusing absolute paths, ``..`` escapes and symlinks leaving ``root``."""
    root = Path(root).resolve()
    if not rel or "\x00" in rel:
        raise UnsafePathError(f"empty or invalid path {rel!r}")
    candidate = (root / rel).resolve()
    if Path(rel).is_absolute() or not candidate.is_relative_to(root):
        raise UnsafePathError(f"path {rel!r} escapes the catalogue folder {root}")
    return candidate


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        hi = a.max() if a.size else 1.0
        scale = 255.0 / (65535.0 if hi > 255 else 255.0) if img.mode != "F" else 255.0 / max(hi, 1e-12)
        return Image.fromarray(np.clip(a * scale, 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img.convert("RGB")  # P, L, 1, CMYK, YCbCr, LAB, HSV


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(f"image is {width}x{height} = {width * height} pixels, over the cap of {max_pixels}")


def _plain_jpeg(data: bytes) -> bool:
    """True for a JPEG whose header segments hold no EXIF block, so no orientation can apply. Walks the
    marker segments up to the scan rather than searching the bytes, since ICC or XMP data may contain anything."""
    if data[:2] != b"\xff\xd8":
        return False
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xDA:  # start of scan: every header segment has been seen
            return True
        if marker == 0xE1 and data[pos + 4 : pos + 10] == b"Exif\x00\x00":
            return False
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return False


def _fast_jpeg(data: bytes, max_pixels: int) -> Image.Image | None:
    """The common catalogue case, a YCbCr or grey JPEG with no EXIF, decoded by libjpeg-turbo straight to RGB:
    the same pixels as Pillow (a test checks). None for anything else, or anything odd, so Pillow handles it
    and reports it in its own words."""
    if not _plain_jpeg(data):
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if colorspace not in ("YCbCr", "Gray"):
            return None
        _check_pixels(width, height, max_pixels)
        rgb = simplejpeg.decode_jpeg(data, colorspace="RGB")
    except ImageTooLargeError:
        raise
    except Exception:  # noqa: BLE001 - truncated or unusual files get Pillow's verdict instead
        return None
    return Image.frombytes("RGB", (rgb.shape[1], rgb.shape[0]), rgb.tobytes())


def load_image(src: Path | str | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode to an upright RGB image; raises ImageTooLargeError over ``max_pixels``, ValueError if undecodable."""
    try:
        data = src if isinstance(src, bytes) else Path(src).read_bytes()
    except FileNotFoundError:
        raise
    except OSError as e:
        raise ValueError(f"cannot read image: {e}") from e
    fast = _fast_jpeg(data, max_pixels)
    if fast is not None:
        return fast
    fp = io.BytesIO(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp)
            _check_pixels(img.width, img.height, max_pixels)
            img.load()
    except ImageTooLargeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLargeError(str(e)) from e
    except Exception as e:
        raise ValueError(f"cannot decode image: {e}") from e
    img = ImageOps.exif_transpose(img) or img
    return _to_rgb(img)
