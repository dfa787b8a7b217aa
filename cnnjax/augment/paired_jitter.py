"""pix2pix's random jitter, applied identically to every image of a pair.

Each example is resized (bilinear) to `load_size`, cropped back to its own size at a
random offset and mirrored left-right with probability 1/2; the offset and the flip come
from the example's own key, so the images of a pair (and their labels maps, outlines...)
stay aligned and the numbers do not depend on how the batch is split over devices.
"""

import jax
import jax.numpy as jnp


def jitter_example(key: jax.Array, images: tuple[jax.Array, ...], *, load_size: int,
                   flip: bool) -> tuple[jax.Array, ...]:
  """Resize to `load_size`, random crop back, random flip: one transform for all images.

  Args:
    key: the example's key.
    images: (H, W, C_i) arrays of one size H = W.
    load_size: the side resized to before cropping (>= H; H means no crop).
    flip: mirror left-right with probability 1/2.
  """
  size = images[0].shape[0]
  offset_key, flip_key = jax.random.split(key)
  offsets = jax.random.randint(offset_key, (2,), 0, load_size - size + 1)
  do_flip = jax.random.bernoulli(flip_key) & flip

  def transform(image):
    if load_size != size:
      image = jax.image.resize(image, (load_size, load_size, image.shape[-1]), "bilinear")
      image = jax.lax.dynamic_slice(image, (offsets[0], offsets[1], 0),
                                    (size, size, image.shape[-1]))
    return jnp.where(do_flip, image[:, ::-1], image)

  return tuple(transform(image) for image in images)


def jitter_batch(keys_b: jax.Array, images: tuple[jax.Array, ...], *, load_size: int,
                 flip: bool) -> tuple[jax.Array, ...]:
  """`jitter_example` over a batch: `keys_b` (b,) typed keys, images (b, H, W, C_i)."""
  return jax.vmap(lambda key, *example: jitter_example(
      key, example, load_size=load_size, flip=flip))(keys_b, *images)
