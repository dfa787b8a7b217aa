"""Image grids as PNG files."""

import math

import numpy as np
from PIL import Image

from cnnjax.io.atomic import atomic_write


def to_uint8(images_nhwc: np.ndarray) -> np.ndarray:
  """Maps images in [-1, 1] to uint8 [0, 255] (out-of-range values are clipped)."""
  images = (np.asarray(images_nhwc, np.float32) + 1.0) * 127.5
  return np.clip(np.round(images), 0, 255).astype(np.uint8)


def make_grid(images_nhwc: np.ndarray, num_cols: int | None = None,
              padding: int = 2, pad_value: int = 255) -> np.ndarray:
  """Tiles images in [-1, 1] into one uint8 image.

  Args:
    images_nhwc: (N, H, W, C) images in [-1, 1], C in {1, 3}.
    num_cols: images per row; default ceil(sqrt(N)).
    padding: pixels between and around tiles.
    pad_value: grey level of the padding.

  Returns:
    (rows * (H + padding) + padding, cols * (W + padding) + padding, C) uint8 array.
  """
  images = to_uint8(images_nhwc)
  n, h, w, c = images.shape
  num_cols = num_cols or math.ceil(math.sqrt(n))
  num_rows = math.ceil(n / num_cols)
  grid = np.full((num_rows * (h + padding) + padding,
                  num_cols * (w + padding) + padding, c), pad_value, np.uint8)
  for index in range(n):
    row, col = divmod(index, num_cols)
    top, left = padding + row * (h + padding), padding + col * (w + padding)
    grid[top:top + h, left:left + w] = images[index]
  return grid


def save_png(path: str, image_hwc: np.ndarray) -> None:
  """Writes a uint8 (H, W, 1 or 3) image atomically: readers never see a partial file."""
  image = image_hwc[..., 0] if image_hwc.shape[-1] == 1 else image_hwc
  with atomic_write(path, "wb") as file:
    Image.fromarray(image).save(file, format="PNG")
