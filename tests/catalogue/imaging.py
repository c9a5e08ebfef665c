"""Small generated images and catalogues for the catalogue tests (nothing binary is committed)."""
from __future__ import annotations

import csv
import io
import struct
import zlib
from pathlib import Path

from PIL import Image

RED, BLUE = (220, 20, 20), (20, 20, 220)


def product(size: tuple[int, int] = (60, 80), colour: tuple[int, int, int] = RED) -> Image.Image:
    """A product shot: a coloured block on white."""
    img = Image.new("RGB", size, (255, 255, 255))
    img.paste(colour, (size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4))
    return img


def save(img: Image.Image, path: Path, fmt: str | None = None, **kw: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, fmt, **kw)
    return path


def encoded(img: Image.Image, fmt: str = "JPEG", **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` pixels but carries (almost) no data: a decompression bomb probe."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


FASHION_HEADER = ["id", "gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "year",
                  "usage", "productDisplayName"]


def make_fashion(folder: Path, n: int = 12, missing: tuple[int, ...] = (3,)) -> Path:
    """A mini Kaggle fashion layout: styles.csv + images/<id>.jpg; ids in ``missing`` have no image file,
    one row has an extra comma (malformed) and one has empty cells."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    types = ["Shirts", "Jeans", "Watches"]
    lines = [",".join(FASHION_HEADER)]
    for i in range(n):
        pid = 1000 + i
        t = types[i % 3]
        colour = "" if i == 1 else "Blue"
        year = "" if i == 1 else str(2010 + i % 5)
        lines.append(f"{pid},Men,Apparel,Topwear,{t},{colour},Fall,{year},Casual,Brand Men {colour} {t} {i}")
        if i not in missing:
            save(product(colour=RED if i % 2 else BLUE), folder / "images" / f"{pid}.jpg")
    lines.append("9999,Women,Apparel,Topwear,Tops,Red,Summer,2012,Casual,Brand Women, Red Top")  # extra comma
    (folder / "styles.csv").write_text("\n".join(lines) + "\n")
    return folder


def make_ikea(folder: Path) -> Path:
    """An IKEA-like manifest: one article sits in two folders (a duplicate group)."""
    rows = [
        ("images/chair/111.222.33.jpg", "Chair", "111.222.33", "chair", "ADDE", "White", "45 cm"),
        ("images/dining table/444.555.66.jpg", "Dining table", "444.555.66", "dining table", "MELLTORP", "", ""),
        ("images/objects/777.888.99.jpg", "Vase", "777.888.99", "", "VASEN", "Clear glass", "20 cm"),
        ("images/objects/111.222.33.jpg", "Chair", "111.222.33", "", "ADDE", "White", "45 cm"),
    ]
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "manifest.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "group", "coarse_folder", "name", "color", "size"])
        for r in rows:
            w.writerow(r)
            save(product(size=(50, 50)), folder / r[0])
    return folder / "manifest.csv"
