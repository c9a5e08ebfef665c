"""load_image, safe_join and the hashes on generated images: orientation, modes, bombs, bad bytes, escapes."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.catalogue.ingest import check_image
from lookalike.imaging import (
    ImageTooLargeError,
    UnsafePathError,
    _fast_jpeg,
    _plain_jpeg,
    content_hash,
    file_hash,
    load_image,
    safe_join,
)

from .imaging import BLUE, RED, encoded, png_header_only, product, save


def _close(px: tuple[int, ...], want: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(px, want, strict=True))


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # stored 40x20: red left half, blue right half; Orientation=6 means "rotate 90 degrees clockwise to view"
    img = Image.new("RGB", (40, 20), BLUE)
    img.paste(RED, (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(img, tmp_path / "rotated.jpg", "JPEG", exif=exif.tobytes(), quality=95)
    assert Image.open(path).size == (40, 20)

    out = load_image(path)
    assert out.size == (20, 40) and out.mode == "RGB"
    assert _close(out.getpixel((10, 5)), RED, 40)  # the stored left side is now on top
    assert _close(out.getpixel((10, 35)), BLUE, 40)


@pytest.mark.parametrize("mode,options", [
    ("RGB", {"quality": 90}),
    ("RGB", {"quality": 75, "subsampling": 0}),
    ("RGB", {"quality": 80, "progressive": True}),
    ("RGB", {"quality": 90, "icc_profile": b"\xff\xda" * 64}),  # a start-of-scan lookalike inside a segment
    ("L", {"quality": 85}),
])
def test_plain_jpegs_take_the_fast_path_with_pillows_pixels(mode: str, options: dict) -> None:
    data = encoded(product((61, 83)).convert(mode), "JPEG", **options)
    fast = _fast_jpeg(data, max_pixels=10_000)
    assert fast is not None and fast.mode == "RGB" and fast.size == (61, 83)
    with Image.open(io.BytesIO(data)) as ref:
        assert np.array_equal(np.asarray(fast), np.asarray(ref.convert("RGB")))
    assert np.array_equal(np.asarray(load_image(data)), np.asarray(fast))
    with pytest.raises(ImageTooLargeError):
        _fast_jpeg(data, max_pixels=61 * 83 - 1)


def test_jpegs_the_fast_path_leaves_to_pillow() -> None:
    exif = Image.Exif()
    exif[0x0112] = 1
    assert not _plain_jpeg(encoded(product(), "JPEG", exif=exif.tobytes()))  # orientation needs reading
    assert _fast_jpeg(encoded(Image.new("CMYK", (8, 8)), "JPEG"), 10_000) is None  # Adobe CMYK inversion
    jpeg = encoded(product((200, 200)), "JPEG")
    assert _fast_jpeg(jpeg[: len(jpeg) // 2], 10**6) is None  # truncated: Pillow's error message
    assert not _plain_jpeg(encoded(product(), "PNG")) and not _plain_jpeg(b"\xff\xd8\xff")


def test_rgba_alpha_is_composited_on_white(tmp_path: Path) -> None:
    img = Image.new("RGBA", (4, 2), (0, 0, 0, 0))  # fully transparent black
    img.putpixel((1, 0), (255, 0, 0, 255))
    img.putpixel((2, 0), (255, 0, 0, 128))
    out = load_image(save(img, tmp_path / "a.png"))
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 0)) == (255, 0, 0)
    assert _close(out.getpixel((2, 0)), (255, 127, 127), 2)


def test_palette_with_transparency_and_la(tmp_path: Path) -> None:
    p = Image.new("P", (3, 1), 0)
    p.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    p.putpixel((1, 0), 1)
    out = load_image(save(p, tmp_path / "p.png", transparency=0))
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 0)) == (0, 200, 0)

    la = Image.new("LA", (2, 1), (0, 0))
    la.putpixel((1, 0), (40, 255))
    out = load_image(save(la, tmp_path / "la.png"))
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 0)) == (40, 40, 40)


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    out = load_image(save(cmyk, tmp_path / "cmyk.jpg", quality=95))
    assert out.mode == "RGB" and _close(out.getpixel((4, 4)), (255, 0, 0), 20)


def test_16_bit_greyscale_is_scaled(tmp_path: Path) -> None:
    a = np.array([[0, 65535, 32768]], dtype=np.uint16)
    img = Image.fromarray(a)
    assert img.mode.startswith("I;16")
    for src in (img, Image.open(save(img, tmp_path / "g16.png"))):
        out = load_image(save(src, tmp_path / "g16b.png"))
        assert out.mode == "RGB"
        assert out.getpixel((0, 0)) == (0, 0, 0) and out.getpixel((1, 0)) == (255, 255, 255)
        assert _close(out.getpixel((2, 0)), (128, 128, 128), 1)


@pytest.mark.parametrize("width,height", [(100_000, 100_000), (8000, 6000)])
def test_png_header_claiming_huge_dimensions_is_refused(width: int, height: int) -> None:
    # the first trips PIL's own bomb guard, the second only our 40 MP cap: both must say "too large"
    with pytest.raises(ImageTooLargeError):
        load_image(png_header_only(width, height))


def test_real_image_over_a_small_pixel_cap(tmp_path: Path) -> None:
    path = save(product((300, 300)), tmp_path / "big.png")
    assert load_image(path, max_pixels=90_000).size == (300, 300)
    with pytest.raises(ImageTooLargeError):
        load_image(path, max_pixels=89_999)
    assert check_image(str(path), max_pixels=10_000)[0] == "image_too_large"


def test_undecodable_truncated_and_missing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot decode"):
        load_image(b"this is not an image")
    jpeg = encoded(product((200, 200)), "JPEG")
    with pytest.raises(ValueError):
        load_image(jpeg[: len(jpeg) // 2])
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "nope.jpg")

    (tmp_path / "text.jpg").write_text("hello")
    assert check_image(str(tmp_path / "text.jpg"))[0] == "undecodable_image"
    assert check_image(str(tmp_path / "nope.jpg"))[0] == "missing_image"
    assert check_image(str(tmp_path))[0] == "missing_image"  # a folder is not an image file


def test_check_image_hash_is_the_file_hash(tmp_path: Path) -> None:
    path = save(product(), tmp_path / "ok.jpg")
    status, digest = check_image(str(path))
    assert status == "ok" and digest == file_hash(path) == content_hash(path.read_bytes())
    assert len(digest) == 32 and content_hash(b"a") != content_hash(b"b")


def test_safe_join_refuses_escapes(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    save(product(), root / "images" / "a.jpg")
    outside = save(product(), tmp_path / "secret.jpg")
    os.symlink(outside, root / "images" / "link.jpg")

    assert safe_join(root, "images/a.jpg") == (root / "images" / "a.jpg").resolve()
    assert safe_join(root, "images/../images/a.jpg") == (root / "images" / "a.jpg").resolve()
    for bad in ("../secret.jpg", str(outside), "images/link.jpg", "", "a\x00b"):
        with pytest.raises(UnsafePathError):
            safe_join(root, bad)
