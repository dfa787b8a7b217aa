"""Users' image files (PNG, JPEG, ...) as float arrays, and single images as PNG files.

Editing, translation and style transfer read photographs and masks that users pass on
the command line; every way such a file can be unusable is one `ImageError` line that
names the file and what to do.
"""

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from cnnjax.errors import ImageError
from cnnjax.io.images import save_png, to_uint8

_MODES = {1: "L", 3: "RGB"}


def read_image(path: str, *, channels: int = 3, size: tuple[int, int] | None = None,
               resize: bool = False, strict_channels: bool = False) -> np.ndarray:
  """Reads an image file as float32 pixels in [-1, 1].

  Grey, palette, RGBA and 16-bit files are converted to `channels` (RGBA is composited
  on white, the usual rendering of a transparent background).

  Args:
    path: the file.
    channels: 1 (grey) or 3 (RGB).
    size: the (height, width) the caller needs, or None for the file's own size.
    resize: resize to `size` (bicubic) instead of refusing another size.
    strict_channels: refuse a colour file when `channels` is 1 (unless its red, green
      and blue are equal everywhere) and a grey file when `channels` is 3, instead of
      converting it.

  Returns:
    (H, W, channels) float32 array in [-1, 1].

  Raises:
    ImageError: the file is missing, a directory, not an image, (with resize=False)
      not of `size`, or (with strict_channels) of the other number of channels.
  """
  if channels not in _MODES:
    raise ValueError(f"channels must be 1 or 3, got {channels}")
  if not os.path.exists(path):
    raise ImageError(f"Image file {path} does not exist: check the path.")
  if os.path.isdir(path):
    raise ImageError(f"{path} is a directory, not an image file: pass a PNG or JPEG file.")
  try:
    with Image.open(path) as image:
      image.load()
      if strict_channels:
        _check_channels(path, image, channels)
      image = _converted(image, _MODES[channels])
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
    raise ImageError(f"Cannot read {path} as an image ({type(error).__name__}): pass a "
                     "PNG or JPEG file.") from None
  if size is not None and (image.height, image.width) != tuple(size):
    if not resize:
      raise ImageError(f"{path} is {image.height}x{image.width} (height x width) but "
                       f"{size[0]}x{size[1]} is needed: resize it, or pass the flag that "
                       "resizes inputs.")
    image = image.resize((size[1], size[0]), Image.Resampling.BICUBIC)
  pixels = np.asarray(image, np.float32).reshape(image.height, image.width, channels)
  return pixels / 127.5 - 1.0


_GREY_MODES = ("1", "L", "LA", "I", "F", "I;16", "I;16B", "I;16L")


def _check_channels(path: str, image: Image.Image, channels: int) -> None:
  grey = image.mode in _GREY_MODES or (channels == 1 and _equal_bands(image))
  if grey != (channels == 1):
    found, wanted = ("grey", "RGB") if grey else ("colour", "grey")
    raise ImageError(f"{path} is a {found} image but {wanted} images are needed: "
                     f"convert it to {wanted} first.")


def _equal_bands(image: Image.Image) -> bool:
  pixels = np.asarray(image.convert("RGB"))
  return bool(np.all(pixels == pixels[..., :1]))


def _converted(image: Image.Image, mode: str) -> Image.Image:
  if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grey: scale to 8 bits.
    pixels = np.asarray(image, np.float64)
    peak = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
    image = Image.fromarray(np.round(pixels / peak * 255).astype(np.uint8), "L")
  if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and
                                            "transparency" in image.info):
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    image = Image.alpha_composite(background, rgba)
  return image.convert(mode)


def write_image(path: str, image_hwc: np.ndarray) -> None:
  """Writes one (H, W, 1 or 3) image in [-1, 1] as a PNG file, atomically."""
  save_png(path, to_uint8(image_hwc))
