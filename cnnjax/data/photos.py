"""Photographs for style transfer: users' files and scikit-image's bundled examples.

An image is named by a path (PNG, JPEG, ... of any size; grey, palette and RGBA files are
converted to RGB by `cnnjax.io.image_files.read_image`) or by `skimage:NAME`, one of
scikit-image's bundled photographs (`EXAMPLES`), which need no download (the
`photo_crops` dataset is cut from them too). Every image is
resized so that its shorter side is the config's `image_size` (bicubic, antialiased) and
centre-cropped to a square, so that several content images form one batch.
"""

import os

import numpy as np
from PIL import Image

from cnnjax.errors import ImageError
from cnnjax.io.image_files import read_image
from cnnjax.io.images import to_uint8

SKIMAGE_PREFIX = "skimage:"
EXAMPLES = ("astronaut", "coffee", "chelsea", "camera", "rocket", "immunohistochemistry",
            "motorcycle", "hubble_deep_field", "retina", "colorwheel", "gravel", "brick")


def image_name(spec: str) -> str:
  """A short name of an image spec, for file names: `astronaut`, `photo` (photo.png)."""
  if spec.startswith(SKIMAGE_PREFIX):
    return spec[len(SKIMAGE_PREFIX):]
  return os.path.splitext(os.path.basename(spec))[0] or "image"


def example_pixels(name: str) -> np.ndarray:
  """One of scikit-image's photographs (`EXAMPLES`) as (H, W, 3) uint8.

  `motorcycle` is the left view of `stereo_motorcycle`; grey photographs are repeated
  over three channels.

  Raises:
    ImageError: an unknown name, or scikit-image is not installed (one line).
  """
  if name not in EXAMPLES:
    raise ImageError(f"Unknown example image {SKIMAGE_PREFIX}{name}: use one of "
                     f"{', '.join(SKIMAGE_PREFIX + n for n in EXAMPLES)}, or a file path.")
  try:
    from skimage import data   # Imported only when an example is asked for.
  except ImportError:
    raise ImageError(f"{SKIMAGE_PREFIX}{name} needs scikit-image (pip install -r "
                     "requirements.txt), or pass a file path.") from None
  pixels = np.asarray(data.stereo_motorcycle()[0] if name == "motorcycle"
                      else getattr(data, name)())
  if pixels.ndim == 2:
    pixels = np.repeat(pixels[..., None], 3, axis=-1)
  return pixels[..., :3].astype(np.uint8)


def square_resize(image_hwc: np.ndarray, size: int) -> np.ndarray:
  """Resizes the shorter side to `size` (bicubic) and centre-crops to size x size.

  Args:
    image_hwc: (H, W, 3) float image in [-1, 1].
    size: output height and width.

  Returns:
    (size, size, 3) float32 image in [-1, 1].
  """
  height, width = image_hwc.shape[:2]
  scale = size / min(height, width)
  new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
  pil = Image.fromarray(to_uint8(image_hwc)).resize((new_w, new_h),
                                                     Image.Resampling.BICUBIC)
  top, left = (new_h - size) // 2, (new_w - size) // 2
  cropped = np.asarray(pil, np.float32)[top:top + size, left:left + size]
  return cropped / 127.5 - 1.0


def load_image(spec: str, size: int) -> np.ndarray:
  """The image named by `spec` (a path or `skimage:NAME`), as (size, size, 3) in [-1, 1].

  Raises:
    ImageError: a missing or unreadable file, or an unknown example name (one line).
  """
  if spec.startswith(SKIMAGE_PREFIX):
    pixels = example_pixels(spec[len(SKIMAGE_PREFIX):]).astype(np.float32) / 127.5 - 1.0
  else:
    pixels = read_image(spec, channels=3)
  return square_resize(pixels, size)
