"""DiffAugment (Zhao et al. 2020): differentiable augmentation of real and fake images.

The discriminator only ever sees augmented images, real and generated alike, and the
generator's gradient flows back through the same (differentiable) augmentation. A
policy is a comma-separated list of augmentation groups, applied in order:

  color        brightness + U[-0.5, 0.5); saturation x U[0, 2); contrast x U[0.5, 1.5)
  translation  integer shift by up to `translation_ratio` of the size, zero fill
  cutout       one zeroed square of `cutout_ratio` of the size, at a random centre

as the authors' code does, on NHWC images in [-1, 1] (the fill value 0 is mid-grey).
Colour changes are not clipped (nor in the paper): outputs can leave [-1, 1];
translation and cutout only move or zero pixels.

Randomness is explicit and per example: `key` is either one key, split into one key per
example, or an array of B keys (e.g. `jax.random.split(step_key, global_batch)` sharded
like the batch, which makes the augmentation independent of the number of devices).
Augment real and fake images with different keys, as the paper does.
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from cnnjax.errors import ConfigError

ExampleAugmentation = Callable[[jax.Array, jax.Array], jax.Array]  # (H, W, C), key
POLICY_GROUPS = ("color", "translation", "cutout")


def _uniform(key: jax.Array, dtype) -> jax.Array:
  return jax.random.uniform(key, (), jnp.float32).astype(dtype)


def brightness(image_hwc: jax.Array, key: jax.Array) -> jax.Array:
  """Adds u - 0.5, u ~ U[0, 1), to every pixel of one (H, W, C) image."""
  return image_hwc + (_uniform(key, image_hwc.dtype) - 0.5)


def saturation(image_hwc: jax.Array, key: jax.Array) -> jax.Array:
  """Scales each pixel's deviation from its grey (channel mean) by 2u, u ~ U[0, 1)."""
  grey = jnp.mean(image_hwc, axis=-1, keepdims=True)
  return (image_hwc - grey) * (2 * _uniform(key, image_hwc.dtype)) + grey


def contrast(image_hwc: jax.Array, key: jax.Array) -> jax.Array:
  """Scales the deviation from the image's mean by u + 0.5, u ~ U[0, 1)."""
  mean = jnp.mean(image_hwc)
  return (image_hwc - mean) * (_uniform(key, image_hwc.dtype) + 0.5) + mean


def translation(image_hwc: jax.Array, key: jax.Array, *, ratio: float) -> jax.Array:
  """Shifts by (dy, dx) ~ U{-s..s}, s = round(ratio * size), filling with zeros."""
  height, width, channels = image_hwc.shape
  shift_h, shift_w = int(height * ratio + 0.5), int(width * ratio + 0.5)
  key_h, key_w = jax.random.split(key)
  dy = jax.random.randint(key_h, (), -shift_h, shift_h + 1)
  dx = jax.random.randint(key_w, (), -shift_w, shift_w + 1)
  padded = jnp.pad(image_hwc, ((shift_h, shift_h), (shift_w, shift_w), (0, 0)))
  return jax.lax.dynamic_slice(padded, (shift_h + dy, shift_w + dx, 0),
                               (height, width, channels))


def cutout(image_hwc: jax.Array, key: jax.Array, *, ratio: float) -> jax.Array:
  """Zeroes a round(ratio * size) square centred uniformly (clipped at the borders)."""
  height, width, _ = image_hwc.shape
  size_h, size_w = int(height * ratio + 0.5), int(width * ratio + 0.5)
  key_h, key_w = jax.random.split(key)
  top = jax.random.randint(key_h, (), 0, height + (1 - size_h % 2)) - size_h // 2
  left = jax.random.randint(key_w, (), 0, width + (1 - size_w % 2)) - size_w // 2
  rows, cols = jnp.arange(height), jnp.arange(width)
  inside_h = (rows >= top) & (rows < top + size_h)
  inside_w = (cols >= left) & (cols < left + size_w)
  keep_hw = ~(inside_h[:, None] & inside_w[None, :])
  return image_hwc * keep_hw[..., None].astype(image_hwc.dtype)


def parse_policy(policy: str, field: str = "DiffAugment policy") -> tuple[str, ...]:
  """"color,translation" -> ("color", "translation"); "" -> () (no augmentation).

  Args:
    policy: the policy string.
    field: what set it (a config field), named in errors.

  Raises:
    ConfigError: for a name that is not in `POLICY_GROUPS`.
  """
  if not isinstance(policy, str):
    raise ConfigError(f"{field} must be a string such as 'translation,cutout,color', "
                      f"got {policy!r}.")
  names = tuple(name.strip() for name in policy.split(",") if name.strip())
  for name in names:
    if name not in POLICY_GROUPS:
      raise ConfigError(f"Unknown DiffAugment entry {name!r} in {field}={policy!r}: use "
                        f"a comma-separated list of {', '.join(POLICY_GROUPS)}.")
  return names


def _example_keys(key: jax.Array, batch_size: int) -> jax.Array:
  """One key per example: `key` split B ways, or `key` itself if it holds B keys."""
  is_typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
  single_ndim = 0 if is_typed else 1  # Raw uint32 keys carry a trailing (2,) axis.
  if key.ndim == single_ndim:
    return jax.random.split(key, batch_size)
  if key.ndim != single_ndim + 1 or key.shape[0] != batch_size:
    raise ValueError(f"DiffAugment needs one key or {batch_size} keys, got shape "
                     f"{key.shape}.")
  return key


def diff_augment(images_bhwc: jax.Array, key: jax.Array, policy: str, *,
                 translation_ratio: float = 0.125, cutout_ratio: float = 0.5) -> jax.Array:
  """Applies the augmentations of `policy` to every image, differentiably.

  Args:
    images_bhwc: images (B, H, W, C), nominally in [-1, 1].
    key: one PRNG key, or B keys (B,) (raw uint32 keys: (2,) or (B, 2)).
    policy: comma-separated groups from `POLICY_GROUPS`, e.g. "color,translation,cutout".
    translation_ratio: largest shift as a fraction of the image size (paper: 1/8).
    cutout_ratio: side of the cut-out square as a fraction of the size (paper: 1/2).

  Returns:
    Augmented images (B, H, W, C), same dtype; a function of `key` alone besides the
    images (the same key gives the same augmentation).
  """
  groups: dict[str, tuple[ExampleAugmentation, ...]] = {
      "color": (brightness, saturation, contrast),
      "translation": (functools.partial(translation, ratio=translation_ratio),),
      "cutout": (functools.partial(cutout, ratio=cutout_ratio),),
  }
  functions = [fn for name in parse_policy(policy) for fn in groups[name]]
  if not functions:
    return images_bhwc
  keys_b = _example_keys(key, images_bhwc.shape[0])

  def augment_one(image_hwc: jax.Array, example_key: jax.Array) -> jax.Array:
    for index, fn in enumerate(functions):
      image_hwc = fn(image_hwc, jax.random.fold_in(example_key, index))
    return image_hwc

  return jax.vmap(augment_one)(images_bhwc, keys_b)
