"""Input photo loading: formats, bit depths, EXIF orientation, resizing and errors."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from backend.infra.errors import LoopscapeError
from backend.io.image import load_image, save_png


def _gradient(w: int = 64, h: int = 48) -> np.ndarray:
    """An asymmetric RGB test pattern (uint8) so that any flip or rotation is visible."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x * 3 + y * 7) % 256], axis=-1).astype(np.uint8)


def test_png_8bit_roundtrip_exact(tmp_path: Path) -> None:
    rgb = _gradient()
    Image.fromarray(rgb).save(tmp_path / "a.png")
    im = load_image(tmp_path / "a.png", None)
    assert im.rgb.dtype == np.float32 and im.rgb.shape == (48, 64, 3)
    assert im.original_size == (64, 48) and im.scale == 1.0
    np.testing.assert_array_equal(np.round(im.rgb * 255).astype(np.uint8), rgb)


def test_png_16bit_keeps_precision(tmp_path: Path) -> None:
    y, x = np.mgrid[0:40, 0:50]
    rgb16 = np.stack([x * 1000 + 7, y * 1500 + 3, np.full_like(x, 65535)], -1).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "a.png"), rgb16[:, :, ::-1])
    im = load_image(tmp_path / "a.png")
    np.testing.assert_allclose(im.rgb, rgb16.astype(np.float32) / 65535.0, atol=1e-6)
    # values that differ by less than one 8-bit step survive
    assert im.rgb[0, 1, 0] - im.rgb[0, 0, 0] == pytest.approx(1000 / 65535, abs=1e-6)


def test_gray_and_alpha(tmp_path: Path) -> None:
    g = _gradient()[:, :, 0]
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    im = load_image(tmp_path / "g.png")
    assert im.rgb.shape == (48, 64, 3)
    np.testing.assert_array_equal(np.round(im.rgb[:, :, 2] * 255), g)
    rgba = np.dstack([_gradient(), np.full((48, 64), 10, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    im = load_image(tmp_path / "rgba.png")
    np.testing.assert_array_equal(np.round(im.rgb * 255).astype(np.uint8), rgba[:, :, :3])
    g16 = (g.astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "g16.png"), g16)
    np.testing.assert_allclose(load_image(tmp_path / "g16.png").rgb[:, :, 1], g16 / 65535.0, atol=1e-6)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path: Path, orientation: int) -> None:
    rgb = _gradient(64, 40)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.jpg"
    Image.fromarray(rgb).save(path, quality=95, exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    im = load_image(path)
    if orientation >= 5:
        assert im.original_size == (40, 64)
    else:
        assert im.original_size == (64, 40)
    got = np.round(im.rgb * 255).astype(np.int32)
    # same decoder family (libjpeg) in both; allow one step of rounding
    assert np.abs(got - expected.astype(np.int32)).max() <= 2


def test_downscale_keeps_aspect_and_never_upscales(tmp_path: Path) -> None:
    rgb = np.zeros((300, 500, 3), np.uint8)
    rgb[:, 250:] = 200
    Image.fromarray(rgb).save(tmp_path / "big.png")
    im = load_image(tmp_path / "big.png", 100)
    assert im.rgb.shape == (60, 100, 3)
    assert im.scale == pytest.approx(0.2)
    assert im.original_size == (500, 300)
    # INTER_AREA averages: the edge column is a clean step, interiors exact
    assert im.rgb[30, 10, 0] == pytest.approx(0.0) and im.rgb[30, 90, 0] == pytest.approx(200 / 255, abs=1e-6)
    same = load_image(tmp_path / "big.png", 4000)
    assert same.rgb.shape == (300, 500, 3) and same.scale == 1.0
    tall = np.zeros((500, 120, 3), np.uint8)
    Image.fromarray(tall).save(tmp_path / "tall.png")
    t = load_image(tmp_path / "tall.png", 250)
    assert t.rgb.shape == (250, 60, 3)


def test_save_png_roundtrip_and_atomic(tmp_path: Path) -> None:
    rgb = _gradient().astype(np.float32) / 255.0
    out = tmp_path / "sub" / "input.png"
    save_png(out, rgb)
    assert [p.name for p in out.parent.iterdir()] == ["input.png"]  # no temp file left
    back = load_image(out)
    np.testing.assert_allclose(back.rgb, rgb, atol=1e-6)


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(LoopscapeError, match="not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(LoopscapeError, match="folder"):
        load_image(tmp_path)
    (tmp_path / "junk.png").write_bytes(b"this is not an image at all")
    with pytest.raises(LoopscapeError, match="not a readable image"):
        load_image(tmp_path / "junk.png")
    good = tmp_path / "good.png"
    Image.fromarray(_gradient()).save(good)
    truncated = tmp_path / "trunc.png"
    truncated.write_bytes(good.read_bytes()[:60])
    with pytest.raises(LoopscapeError):
        load_image(truncated)
    Image.fromarray(_gradient()).save(tmp_path / "a.bmp")
    with pytest.raises(LoopscapeError, match="BMP.*not supported"):
        load_image(tmp_path / "a.bmp")
    Image.fromarray(_gradient(20, 10)).save(tmp_path / "small.png")
    with pytest.raises(LoopscapeError, match="10 pixels|20x10"):
        load_image(tmp_path / "small.png")
    with pytest.raises(LoopscapeError, match="max_side"):
        load_image(good, 0)
    try:
        load_image(tmp_path / "nope.png")
    except LoopscapeError as e:
        assert e.hint and "\n" not in str(e)
