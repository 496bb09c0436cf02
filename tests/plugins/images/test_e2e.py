"""End to end: upload a real photo to a running app, the in-process worker makes thumbnails, fetch them."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import httpx
from PIL import Image

from framework.web.app import create_app
from tests.fixtures.web import serve


def _photo(width: int = 1600, height: int = 1200) -> bytes:
    """A JPEG with a gradient and a red top-left corner, taken sideways (EXIF orientation 6)."""
    img = Image.new("RGB", (width, height))
    px = img.load()
    assert px is not None
    for x in range(0, width, 8):
        for y in range(0, height, 8):
            colour = (255, 0, 0) if x < width // 4 and y < height // 4 else (x * 255 // width, y * 255 // height, 128)
            for dx in range(8):
                for dy in range(8):
                    px[x + dx, y + dy] = colour
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90, exif=exif)
    return out.getvalue()


async def test_uploaded_photo_gets_thumbnails_served_by_the_app(settings: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("FRAMEWORK_LOAD_PLUGINS", "images")
    settings = settings.replace(plugins={"images": {"sizes": {"small": 160, "large": 640}}})
    app = create_app(settings, run_worker=True)
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        created = await http.post("/uploads/", files={"file": ("holiday.jpg", _photo(), "image/jpeg")})
        assert created.status_code == 202, created.text
        status_url = created.headers["Location"]
        deadline = time.monotonic() + 30
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = (await http.get(status_url)).json()
            if status["state"] != "processing":
                break
            await asyncio.sleep(0.1)
        assert status["state"] == "done", status
        assert set(status["thumbnails"]) == {"small", "large"}
        thumb = await http.get(status["thumbnails"]["large"])
        assert thumb.status_code == 200
        image = Image.open(io.BytesIO(thumb.content))
        assert image.format == "WEBP"
        # the sideways photo was turned upright: 1600x1200 stored with orientation 6 is 1200x1600 upright
        assert image.size == (640, round(640 * 1600 / 1200))
        # the red corner moved to the top right, as rotating 90 degrees clockwise does
        r, g, b = image.convert("RGB").getpixel((image.width - 5, 5))[:3]
        assert r > 200 and g < 60 and b < 60
        assert "exif" not in image.info
        missing = await http.get("/uploads/nope")
        assert missing.status_code == 404
