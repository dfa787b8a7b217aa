"""CycleGAN's history pool of generated images (Shrivastava et al. 2017; Zhu et al. 2017),
as a pure function of fixed-size arrays, so it lives in the train state (and its
checkpoints: a resumed run draws the same images).

The discriminator sees, for each new fake, either that fake or, once the pool is full,
with probability 1/2 an older fake from the pool, which the new one replaces, as the
reference implementation's `ImagePool.query` does. Images are taken in batch order, one
after the other (an image stored early in the batch may be handed out later in it).
"""

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class ImagePool:
  """Attributes:
    images: (size, H, W, C) stored fakes (slots >= count are zeros).
    count: int32 scalar, slots filled so far (at most size).
  """
  images: jax.Array
  count: jax.Array

  @property
  def size(self) -> int:
    return self.images.shape[0]


def empty_pool(size: int, image_shape: tuple[int, int, int]) -> ImagePool:
  """A pool of `size` images of `image_shape` (size 0: no pool, fakes pass through)."""
  return ImagePool(images=jnp.zeros((size, *image_shape), jnp.float32),
                   count=jnp.zeros((), jnp.int32))


def pool_draws(key: jax.Array, batch_size: int, pool_size: int
               ) -> tuple[jax.Array, jax.Array]:
  """The query's random numbers: per image a uniform in [0, 1) (> 0.5: hand out a
  stored image) and the slot it would take (b,) int32."""
  swap_key, slot_key = jax.random.split(key)
  return (jax.random.uniform(swap_key, (batch_size,)),
          jax.random.randint(slot_key, (batch_size,), 0, max(pool_size, 1)))


def query_pool(pool: ImagePool, images_bhwc: jax.Array, key: jax.Array
               ) -> tuple[ImagePool, jax.Array]:
  """The images the discriminator sees for `images_bhwc`, and the updated pool.

  While the pool is not full, each image is stored and returned as it is. Once full,
  each image is, with probability 1/2, swapped with a uniformly chosen stored one (the
  stored one is returned, the new one kept), else returned as it is.

  Args:
    pool: the current pool.
    images_bhwc: the new fakes, in the order they are offered (b, H, W, C).
    key: this query's key (e.g. `fold_in` of the run's key with the step).

  Returns:
    `(pool, images)`: the new pool and the b images to show the discriminator.
  """
  if pool.size == 0:
    return pool, images_bhwc
  uniforms, slots = pool_draws(key, images_bhwc.shape[0], pool.size)

  def offer(carry, inputs):
    stored, count = carry
    image, uniform, random_slot = inputs
    filling = count < pool.size
    swap = jnp.logical_and(jnp.logical_not(filling), uniform > 0.5)
    slot = jnp.where(filling, count, random_slot)
    previous = stored[slot]
    stored = stored.at[slot].set(jnp.where(jnp.logical_or(filling, swap), image, previous))
    shown = jnp.where(swap, previous, image)
    return (stored, count + filling.astype(count.dtype)), shown

  (stored, count), shown = jax.lax.scan(offer, (pool.images, pool.count),
                                        (images_bhwc, uniforms, slots))
  return ImagePool(images=stored, count=count), shown
