"""Reading users' image files: conversions, sizes and one-line errors."""

import numpy as np
import pytest
from PIL import Image

from cnnjax.errors import ImageError
from cnnjax.io.image_files import read_image, write_image


def test_round_trip_is_exact_for_8_bit_pixels(tmp_path):
  rng = np.random.default_rng(0)
  pixels = rng.integers(0, 256, (5, 7, 3)).astype(np.float32) / 127.5 - 1.0
  write_image(str(tmp_path / "a.png"), pixels)
  np.testing.assert_allclose(read_image(str(tmp_path / "a.png")), pixels, atol=1e-6)


def test_grey_and_rgba_are_converted(tmp_path):
  Image.fromarray(np.full((4, 6), 255, np.uint8), "L").save(tmp_path / "grey.png")
  rgb = read_image(str(tmp_path / "grey.png"), channels=3)
  assert rgb.shape == (4, 6, 3) and np.all(rgb == 1.0)
  rgba = np.zeros((4, 6, 4), np.uint8)   # Fully transparent black: white on white.
  Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
  grey = read_image(str(tmp_path / "clear.png"), channels=1)
  assert grey.shape == (4, 6, 1) and np.all(grey == 1.0)


def test_16_bit_grey_is_scaled(tmp_path):
  Image.fromarray(np.full((3, 3), 65535, np.uint16)).save(tmp_path / "deep.png")
  assert np.all(read_image(str(tmp_path / "deep.png"), channels=1) == 1.0)


def test_size_is_checked_or_resized(tmp_path):
  Image.new("RGB", (10, 8)).save(tmp_path / "small.jpg")
  with pytest.raises(ImageError, match=r"8x10 \(height x width\) but 16x16"):
    read_image(str(tmp_path / "small.jpg"), size=(16, 16))
  assert read_image(str(tmp_path / "small.jpg"), size=(16, 12), resize=True).shape == (
      16, 12, 3)


@pytest.mark.parametrize("name, content, message", [
    ("missing.png", None, "does not exist"),
    ("folder", "dir", "is a directory"),
    ("garbage.png", b"not an image", "Cannot read"),
    ("truncated.png", "truncated", "Cannot read"),
])
def test_unusable_files_are_one_line_errors(tmp_path, name, content, message):
  path = tmp_path / name
  if content == "dir":
    path.mkdir()
  elif content == "truncated":
    Image.new("RGB", (32, 32), (200, 10, 10)).save(path)
    path.write_bytes(path.read_bytes()[:40])
  elif content is not None:
    path.write_bytes(content)
  with pytest.raises(ImageError, match=message) as error:
    read_image(str(path))
  assert "\n" not in str(error.value)
