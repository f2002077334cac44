"""The page is a door like `predict` and the API: the same pixel limit and message for an upload
of any size, and one message for a model it cannot load (issue 28, items 6 and 7). Driven with
Streamlit's AppTest, in this process; the browser test is tests/test_app.py."""

from __future__ import annotations

import io
import os
import struct
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from qsight_pipeline.app.upload import upload_limit
from qsight_pipeline.data.image_cache import DEFAULT_MAX_PIXELS, ImageDecodeError, load_image

pytest.importorskip("streamlit", reason="the inference extra (streamlit) is not installed")
from streamlit.testing.v1 import AppTest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
PAGE = REPO_ROOT / "src/qsight_pipeline/app/page.py"
LIMIT_FIX = "Resize the image, or raise ingestion.max_pixels if it is genuine"


def png_header(width: int, height: int) -> bytes:
    """A 45-byte PNG whose header claims ``width`` x ``height`` pixels (no pixel data)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def _page(monkeypatch, output_dir: Path, project: Path) -> AppTest:
    monkeypatch.chdir(project)  # the page reads the conf/ of the folder it was started in
    monkeypatch.setattr(sys, "argv", ["page", "--output-dir", str(output_dir)])
    app = AppTest.from_file(str(PAGE), default_timeout=120)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def _upload(app: AppTest, name: str, data: bytes) -> str:
    app.file_uploader[0].set_value((name, data, "image/png"))
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    assert len(app.error) == 1
    return app.error[0].value


class Shell:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_crafted_checkpoint_is_one_message_on_the_page(monkeypatch, tmp_path):
    import torch

    model = tmp_path / "model"
    model.mkdir()
    torch.save({"format": "x", "model_state": Shell()}, model / "complete_checkpoint.pth")
    app = _page(monkeypatch, model, tmp_path)
    assert [e.value for e in app.error] == [app.error[0].value]
    assert f"{model}/complete_checkpoint.pth" in app.error[0].value
    assert "posix.system" in app.error[0].value  # the object it refused to run
    assert not app.file_uploader  # nothing to grade with
    assert not (tmp_path / "PWNED").exists()


def _limit_caption(app, limit: str, conf) -> bool:
    """The page states the pixel limit, the setting and the conf folder it came from."""
    return any(limit in c.value and "ingestion.max_pixels" in c.value and str(conf) in c.value
               for c in app.caption)


@pytest.fixture
def any_model(monkeypatch):
    """A stand-in for the trained model: these uploads are refused before it is used."""
    import qsight_pipeline.inference as inference

    monkeypatch.setattr(inference, "load_model", lambda output_dir, device="cpu": object())


def test_uploads_over_max_pixels_get_the_projects_message_at_every_size(
    monkeypatch, tmp_path, any_model
):
    app = _page(monkeypatch, tmp_path / "model", REPO_ROOT)
    assert _limit_caption(app, f"{DEFAULT_MAX_PIXELS:,}", REPO_ROOT / "conf")
    # 144 MP: what Pillow decodes with a warning (about 1.5 GB); 900 MP: Pillow's "decompression
    # bomb" error. Both are refused from the header, with the message predict and the API give.
    message = _upload(app, "big.png", png_header(12_000, 12_000))
    # Pinned in full: the page's refusal of an oversized upload, with its size and the fix.
    assert message == ("Cannot grade big.png: 12000x12000 = 144,000,000 pixels is over "
                       "ingestion.max_pixels (50,000,000); decoding it would take about 576 MB. "
                       f"{LIMIT_FIX}. Upload a fundus photograph.")
    message = _upload(app, "bomb.png", png_header(30_000, 30_000))
    assert "900,000,000" in message and "ingestion.max_pixels" in message
    assert LIMIT_FIX in message and "decompression bomb" not in message


def test_the_page_applies_the_projects_own_max_pixels(monkeypatch, tmp_path, any_model):
    (tmp_path / "conf" / "base").mkdir(parents=True)
    (tmp_path / "conf" / "local").mkdir()
    (tmp_path / "conf" / "base" / "parameters.yml").write_text("ingestion:\n  max_pixels: 100\n")
    assert upload_limit(tmp_path) == (100, f"ingestion.max_pixels in {tmp_path / 'conf'}")
    app = _page(monkeypatch, tmp_path / "model", tmp_path)
    assert _limit_caption(app, "100", tmp_path / "conf")
    photograph = io.BytesIO()
    Image.new("RGB", (20, 20), (120, 40, 20)).save(photograph, format="PNG")
    message = _upload(app, "small.png", photograph.getvalue())
    assert all(value in message for value in ("small.png", "20x20", "ingestion.max_pixels", "(100)"))


def test_without_a_project_the_default_limit_applies_and_says_so(tmp_path):
    assert upload_limit(tmp_path) == (
        DEFAULT_MAX_PIXELS, f"the default ingestion.max_pixels: no project conf/ in {tmp_path}")


def test_predict_gives_the_same_message_for_a_header_pillow_calls_a_bomb(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header(30_000, 30_000))
    with pytest.raises(ImageDecodeError) as info:
        load_image(path, 16)
    # Pinned in full: predict and the Python API say what the page says.
    assert str(info.value) == (f"{path}: 900,000,000 pixels is over ingestion.max_pixels "
                               "(50,000,000); decoding it would take about 3,600 MB. "
                               f"{LIMIT_FIX}.")
    with pytest.raises(ImageDecodeError, match=r"Pillow.*ingestion\.max_pixels"):
        load_image(path, 16, max_pixels=10**12)
