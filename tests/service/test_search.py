"""POST /api/search: multipart photo, JSON image_url and JSON positive/negative, and every error code."""
from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

MiB = 1024 * 1024
SMALLER = "send a smaller image (the cap is set by LOOKALIKE_MAX_UPLOAD_BYTES)"


def upload(client: TestClient, data: bytes, filename: str = "photo.png", ctype: str = "image/png",
           **fields: str | list[str]):  # type: ignore[no-untyped-def]
    return client.post("/api/search", files={"image": (filename, data, ctype)}, data=fields)


def test_photo_search_finds_the_product(client: TestClient, catalogue_dir: Path) -> None:
    data = (catalogue_dir / "images" / "p0005.png").read_bytes()
    r = upload(client, data, k="5")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"predicted_category", "data", "count"}
    assert body["count"] == len(body["data"]) == 5
    top = body["data"][0]
    assert top["product"]["id"] == "p0005" and top["score"] == pytest.approx(1.0, abs=1e-4)
    assert set(top) == {"product", "score", "similarity_pct"}
    # the weight-free encoder cannot predict a category
    assert body["predicted_category"] is None


def test_photo_search_options(client: TestClient, catalogue_dir: Path) -> None:
    data = (catalogue_dir / "images" / "p0005.png").read_bytes()
    r = upload(client, data, category="triangle", route="none", k="4")
    assert r.status_code == 200
    assert {it["product"]["category"] for it in r.json()["data"]} == {"triangle"}
    r = upload(client, data, filter=["colour:Blue"], exclude=["gender:Women"], k="3")
    data_ = r.json()["data"]
    assert r.status_code == 200 and data_
    assert all(it["product"]["attributes"]["colour"] == "Blue" and it["product"]["attributes"]["gender"] == "Men"
               for it in data_)
    assert upload(client, data).json()["count"] == 10


def test_photo_search_field_errors(make_client: Callable[..., TestClient], png_bytes: Callable[..., bytes]) -> None:
    client = make_client(max_k=20)
    img = png_bytes()
    cases = [
        ({"k": "0"}, "k must be between 1 and 20 (got 0); the cap is set by LOOKALIKE_MAX_K"),
        ({"k": "many"}, "k must be an integer, got 'many'"),
        ({"route": "sideways"}, "route must be 'auto' or 'none', got 'sideways'"),
        ({"category": "hats"}, "unknown category 'hats': use one of circle, square, stripe, triangle"),
        ({"filter": "colour"}, "filter 'colour' must be written attr:value, e.g. gender:Women"),
    ]
    for fields, detail in cases:
        r = upload(client, img, **fields)
        assert r.status_code == 422, fields
        assert r.json() == {"detail": detail}
    r = client.post("/api/search", data={"k": "3"}, files={"other": ("x.png", img, "image/png")})
    assert r.status_code == 422
    assert r.json() == {"detail": "missing the 'image' file field: send the photo as multipart/form-data with a "
                                  "file field named 'image'"}
    r = upload(client, b"")
    assert r.status_code == 422 and r.json() == {"detail": "the 'image' upload is empty: attach a photo file"}


def test_not_an_image_is_415_and_corrupt_is_422(client: TestClient, png_bytes: Callable[..., bytes]) -> None:
    r = upload(client, b"hello, I am a text file\n" * 10, filename="notes.txt", ctype="text/plain")
    assert r.status_code == 415
    assert r.json() == {"detail": "the upload is not an image: send a JPEG, PNG, WebP, GIF, BMP or TIFF file"}
    truncated = png_bytes((300, 300), fmt="JPEG")[:400]
    r = upload(client, truncated, filename="cut.jpg", ctype="image/jpeg")
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert detail.startswith("the image could not be decoded (cannot decode image:")
    assert detail.endswith("it may be truncated or corrupt: send a complete JPEG, PNG, WebP, GIF, BMP or TIFF file")


def test_wrong_content_type_is_415(client: TestClient) -> None:
    r = client.post("/api/search", content=b"abc", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    assert r.json() == {"detail": "unsupported Content-Type 'text/plain': send multipart/form-data with a file "
                                  "field 'image', or application/json with image_url or positive/negative"}
    r = client.post("/api/search")
    assert r.status_code == 415 and "'(none)'" in r.json()["detail"]


def test_upload_size_caps(make_client: Callable[..., TestClient], png_bytes: Callable[..., bytes]) -> None:
    client = make_client(max_upload_bytes=200_000)
    # declared too large: refused before reading the body
    big = b"\0" * 300_000
    r = upload(client, big)
    assert r.status_code == 413
    assert r.json() == {"detail": "the request body is over the cap of 265536 bytes: send a smaller image "
                                  "(the cap is set by LOOKALIKE_MAX_UPLOAD_BYTES)"}
    # a file just over the cap inside a body that fits the multipart allowance
    r = upload(client, b"\0" * 200_001)
    assert r.status_code == 413
    assert r.json()["detail"] == ("the image (200001 bytes) is over the cap of 200000 bytes: send a smaller image "
                                  "(the cap is set by LOOKALIKE_MAX_UPLOAD_BYTES)")


def test_upload_without_content_length_is_counted(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_upload_bytes=100_000)
    boundary = "xyzzy"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()

    def body() -> Iterator[bytes]:  # chunked: no Content-Length to check up front
        yield head
        for _ in range(40):
            yield b"\0" * 10_000
        yield f"\r\n--{boundary}--\r\n".encode()

    r = client.post("/api/search", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413
    assert r.json()["detail"].startswith("the request body is over the cap of 165536 bytes")


def test_pixel_cap_is_413(make_client: Callable[..., TestClient], png_bytes: Callable[..., bytes]) -> None:
    client = make_client(max_image_pixels=10_000)
    r = upload(client, png_bytes((200, 100)))
    assert r.status_code == 413
    assert r.json() == {"detail": "image is 200x100 = 20000 pixels, over the cap of 10000: send a smaller image "
                                  "(the cap is set by LOOKALIKE_MAX_IMAGE_PIXELS)"}


def test_search_by_ids(client: TestClient) -> None:
    r = client.post("/api/search", json={"positive": ["p0000", "p0004"], "negative": ["p0001"], "k": 5})
    assert r.status_code == 200
    body = r.json()
    assert body["predicted_category"] is None and body["count"] == 5
    ids = {it["product"]["id"] for it in body["data"]}
    assert not ids & {"p0000", "p0004", "p0001"}
    r = client.post("/api/search", json={"positive": ["p0000"], "filter": ["gender:Men"], "k": 4})
    assert r.status_code == 200
    assert {it["product"]["attributes"]["gender"] for it in r.json()["data"]} == {"Men"}


def test_search_json_errors(client: TestClient) -> None:
    cases = [
        ({"positive": ["p0000", "nope"]}, 404, "no product with id 'nope': list ids with GET /api/products"),
        ({"positive": ["p0000"], "negative": ["gone"]}, 404,
         "no product with id 'gone': list ids with GET /api/products"),
        ({"positive": []}, 422, "positive is empty: give at least one product id"),
        ({}, 422, "give exactly one of image_url (a photo to fetch) or positive (product ids)"),
        ({"positive": ["p0000"], "image_url": "http://x/a.png"}, 422,
         "give exactly one of image_url (a photo to fetch) or positive (product ids)"),
        ({"positive": ["p0000"], "k": 1000}, 422,
         "k must be between 1 and 100 (got 1000); the cap is set by LOOKALIKE_MAX_K"),
        ({"positive": ["p0000"], "filter": ["oops"]}, 422,
         "filter 'oops' must be written attr:value, e.g. gender:Women"),
    ]
    for body, status, detail in cases:
        r = client.post("/api/search", json=body)
        assert (r.status_code, r.json()) == (status, {"detail": detail}), body
    r = client.post("/api/search", json={"positive": "p0000", "colour": "Red"})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert detail.startswith("bad JSON body: positive: Input should be a valid list; colour: Extra inputs are "
                             "not permitted. Send")
    r = client.post("/api/search", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"].startswith("the body is not valid JSON: ")
    r = client.post("/api/search", content=b"[" * 70_000, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json()["detail"] == "the JSON body is over 65536 bytes: upload large inputs as multipart/form-data"


def test_image_url_disabled_by_default(client: TestClient) -> None:
    r = client.post("/api/search", json={"image_url": "http://127.0.0.1:9/a.png"})
    assert r.status_code == 422
    assert r.json() == {"detail": "image_url is disabled on this server: upload the photo as multipart/form-data, "
                                  "or start the server with LOOKALIKE_ALLOW_IMAGE_URLS=true"}


class _Handler(http.server.BaseHTTPRequestHandler):
    image: bytes = b""

    def do_GET(self) -> None:
        if self.path == "/photo.png":
            self._send(200, self.image, {"Content-Length": str(len(self.image))})
        elif self.path == "/huge-declared.png":
            self._send(200, b"", {"Content-Length": str(50 * MiB)})
        elif self.path == "/huge-undeclared.png":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            try:
                for _ in range(100):  # no Content-Length: the client must count
                    self.wfile.write(b"\0" * 100_000)
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif self.path == "/slow.png":
            time.sleep(2)
            self._send(200, self.image, {"Content-Length": str(len(self.image))})
        elif self.path == "/redirect-file":
            self._send(302, b"", {"Location": "file:///etc/passwd", "Content-Length": "0"})
        else:
            self._send(404, b"missing", {"Content-Length": "7"})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def image_server(catalogue_dir: Path) -> Iterator[str]:
    _Handler.image = (catalogue_dir / "images" / "p0007.png").read_bytes()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_image_url_fetch(make_client: Callable[..., TestClient], image_server: str) -> None:
    client = make_client(allow_image_urls=True, max_upload_bytes=1 * MiB, image_url_timeout=0.5)
    r = client.post("/api/search", json={"image_url": f"{image_server}/photo.png", "k": 3})
    assert r.status_code == 200
    assert r.json()["data"][0]["product"]["id"] == "p0007"
    cases = [
        ("file:///etc/passwd", 422, "image_url must be an absolute http:// or https:// URL, got 'file:///etc/passwd'"),
        ("/etc/passwd", 422, "image_url must be an absolute http:// or https:// URL, got '/etc/passwd'"),
        (f"{image_server}/missing.png", 422, "image_url answered HTTP 404: give a URL that serves the image directly"),
        (f"{image_server}/huge-declared.png", 413,
         f"the image at image_url ({50 * MiB} bytes) is over the cap of {MiB} bytes: {SMALLER}"),
        (f"{image_server}/huge-undeclared.png", 413, f"the image at image_url is over the cap of {MiB} bytes: {SMALLER}"),
        (f"{image_server}/slow.png", 422, "image_url did not deliver the image within 0.5s (LOOKALIKE_IMAGE_URL_TIMEOUT)"),
    ]
    for url, status, detail in cases:
        r = client.post("/api/search", json={"image_url": url})
        assert (r.status_code, r.json()) == (status, {"detail": detail}), url
    r = client.post("/api/search", json={"image_url": f"{image_server}/redirect-file"})
    assert r.status_code == 422 and r.json()["detail"].startswith("could not fetch image_url: ")
    r = client.post("/api/search", json={"image_url": "http://127.0.0.1:9/nothing-listens.png"})
    assert r.status_code == 422 and r.json()["detail"].startswith("could not fetch image_url: ConnectError")
