"""Bad input at the real endpoints (gradio_client against the in-process app): every bad upload and parameter gets a
specific message, the server keeps serving, files outside the allowed paths stay unreadable, and one session
cannot queue a second job."""
from __future__ import annotations

import io
import struct
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402


@pytest.fixture(scope="module")
def client(api_client):
    return api_client


def png_bytes(w: int, h: int, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (w, h), "white" if mode != "1" else 1).save(buf, "PNG")
    return buf.getvalue()


def png_header_only(w: int, h: int) -> bytes:
    """A valid PNG signature and IHDR claiming w x h, with no pixel data: a decompression bomb's first bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def zip_bytes(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (0o120777 << 16)
            z.writestr(info, "/etc/passwd")
    return buf.getvalue()


GOOD = png_bytes(64, 64)
BAD_FILES = {  # name -> (bytes, what the message must say)
    "empty.png": (b"", "not a readable image"),
    "truncated.png": (GOOD[: len(GOOD) // 2], "not a readable image"),
    "text.png": (b"hello, this is text", "not a readable image"),
    "page.jpg": (b"<!doctype html><html><body>hi</body></html>", "not a readable image"),
    "bomb.png": (png_header_only(30000, 30000), "too large"),
    "tiny.png": (png_bytes(1, 1), "too small"),
    "sliver.png": (png_bytes(2000, 20), "aspect ratio"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_invert_names_the_file_and_the_reason(client, tmp_path, name):
    data, why = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(Exception, match=why) as e:
        client.predict(image_path=handle_file(str(path)), steps=10, wplus_steps=0, api_name="/invert")
    assert name in str(e.value)


def test_invert_refuses_a_zip(client, tmp_path):
    path = tmp_path / "pics.zip"
    path.write_bytes(zip_bytes({"a.png": GOOD}))
    with pytest.raises(Exception, match="Invalid file type|one image file, not a zip"):
        client.predict(image_path=handle_file(str(path)), steps=10, wplus_steps=0, api_name="/invert")


BAD_ZIPS = {  # name -> (bytes, what the message must say)
    "traversal.zip": (zip_bytes({"../../evil.png": GOOD, "/abs.png": GOOD}), "found 0 usable"),
    "nested.zip": (zip_bytes({"inner.zip": zip_bytes({"a.png": GOOD})}), "found 0 usable"),
    "symlink.zip": (zip_bytes({}, symlink="link.png"), "found 0 usable"),
    "ratio-bomb.zip": (zip_bytes({"big.png": b"\0" * 5_000_000}), "compression ratio"),
    "not-a-zip.zip": (b"PK\x03\x04 but nothing after", "not a readable zip"),
    "one-image.zip": (zip_bytes({"a.png": GOOD}), "need at least 2"),
}


@pytest.mark.parametrize("name", sorted(BAD_ZIPS))
def test_finetune_refuses_bad_zips_clearly(client, tmp_path, name):
    data, why = BAD_ZIPS[name]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(Exception, match=why):
        client.predict(data_source="upload", uploads=[handle_file(str(path))], steps=5, api_name="/finetune")


def test_finetune_with_too_many_zip_entries(client, tmp_path):
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as z:
        for i in range(10_001):
            z.writestr(f"{i}.txt", b"")
    with pytest.raises(Exception, match="too many entries"):
        client.predict(data_source="upload", uploads=[handle_file(str(path))], steps=5, api_name="/finetune")


def test_finetune_never_ignores_uploads(client, tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(GOOD)
    b.write_bytes(png_bytes(32, 32))
    with pytest.raises(Exception, match="choose 'upload'"):
        client.predict(data_source="bundled set", bundled="hearts", uploads=[handle_file(str(a)), handle_file(str(b))],
                       steps=5, api_name="/finetune")


BAD_PARAMS = [  # (endpoint, kwargs, what the message must say)
    ("/generate", dict(seed=1, psi=5.0), "maximum value 1.5"),
    ("/generate", dict(seed=1, noise_mode="loud"), "loud"),
    ("/generate", dict(seed=-1), "minimum value 0"),
    ("/generate", dict(seed=1, method="pca"), "pca"),
    ("/generate", dict(seed=1, c0=50.0), "maximum value 3"),
    ("/generate", dict(seed=1, source="url"), "url"),
    ("/interpolate", dict(seeds="1"), "keyframe"),
    ("/interpolate", dict(seeds="a,b"), "bad seed 'a'"),
    ("/interpolate", dict(seeds="9-1,3"), "bad seed range"),
    ("/interpolate", dict(seeds="1,2", frames_per_segment=1000), "maximum value 60"),
    ("/interpolate", dict(seeds="1,2", method="cubic"), "cubic"),
    ("/finetune", dict(data_source="bundled set", bundled="hearts", lr=1.0), "learning rate must be within"),
    ("/finetune", dict(data_source="bundled set", bundled="nope"), "nope"),
    ("/finetune", dict(data_source="web"), "web"),
    ("/finetune", dict(data_source="upload"), "upload some images"),
    ("/finetune", dict(data_source="bundled set", bundled="hearts", steps=0), "minimum value 5"),
    ("/invert", dict(image_path=None), "upload an image"),
]


@pytest.mark.parametrize("endpoint,kwargs,why", BAD_PARAMS, ids=[f"{e}-{'-'.join(k)}" for e, k, _ in BAD_PARAMS])
def test_bad_parameters_get_a_specific_message(client, endpoint, kwargs, why):
    with pytest.raises(Exception, match=why):
        client.predict(**kwargs, api_name=endpoint)


def test_server_is_healthy_after_the_corpus(client):
    path = client.predict(seed=2, psi=0.7, api_name="/generate")
    assert np.asarray(Image.open(path)).shape == (16, 16, 3)


def test_files_outside_the_allowed_paths_cannot_be_read(app_url, tmp_path):
    secret = Path.cwd() / "README.md"  # inside the working directory but not a served file
    for target in ("/etc/passwd", str(secret), "../../../../etc/passwd", str(tmp_path / "x")):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{app_url}gradio_api/file={target}", timeout=10)
        assert e.value.code in (403, 404), (target, e.value.code)


def test_a_session_cannot_queue_a_second_job(app_url):
    c = Client(app_url, verbose=False)
    try:
        first = c.submit(data_source="bundled set", bundled="faces", steps=400, api_name="/finetune")
        t0 = time.time()
        while not any("step" in str(o[0]) or "running" in str(o[0]) for o in first.outputs()) and time.time() - t0 < 60:
            time.sleep(0.1)
        with pytest.raises(Exception, match="already have a fine-tune job"):
            c.predict(data_source="bundled set", bundled="hearts", steps=5, api_name="/finetune")
        with pytest.raises(Exception, match="already have a fine-tune job"):
            c.predict(image_path=handle_file(c.predict(seed=1, api_name="/generate")), api_name="/invert")
        other = Client(app_url, verbose=False)  # another user is not affected
        assert np.asarray(Image.open(other.predict(seed=3, api_name="/generate"))).shape == (16, 16, 3)
        other.close()
        first.cancel()
    finally:
        c.close()
