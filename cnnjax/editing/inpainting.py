"""Inpainting: masks, VAE inpainting (iterated reconstruction, latent optimisation), GAN
inpainting by masked inversion, and the in-mask PSNR that scores them.

Masks are "known" masks (N, H, W, 1) float32: 1 where the pixel is given, 0 where it is
missing (to be filled), as `cnnjax.editing.inversion` takes them. Images are in
[-1, 1]. Random masks draw each image's mask from fold_in(key, index), so an image's
mask does not depend on the batch it is in.
"""

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax

from cnnjax.editing import inversion


def square_mask(height: int, width: int, size: int, top: int | None = None,
                left: int | None = None) -> jax.Array:
  """A size x size missing square, centred unless `top`/`left` are given: (H, W, 1)."""
  top = (height - size) // 2 if top is None else top
  left = (width - size) // 2 if left is None else left
  rows = (jnp.arange(height) >= top) & (jnp.arange(height) < top + size)
  cols = (jnp.arange(width) >= left) & (jnp.arange(width) < left + size)
  return 1.0 - (rows[:, None] & cols[None, :]).astype(jnp.float32)[..., None]


def random_pixel_masks(key: jax.Array, indices_n: jax.Array, height: int, width: int,
                       fraction: float) -> jax.Array:
  """Each pixel missing with probability `fraction`, per image: (N, H, W, 1)."""
  def one(index):
    missing = jax.random.bernoulli(jax.random.fold_in(key, index), fraction,
                                   (height, width, 1))
    return 1.0 - missing.astype(jnp.float32)
  return jax.vmap(one)(indices_n)


def random_box_masks(key: jax.Array, indices_n: jax.Array, height: int, width: int,
                     size: int) -> jax.Array:
  """A size x size missing square at a uniformly drawn place, per image: (N, H, W, 1)."""
  def one(index):
    top_key, left_key = jax.random.split(jax.random.fold_in(key, index))
    top = jax.random.randint(top_key, (), 0, height - size + 1)
    left = jax.random.randint(left_key, (), 0, width - size + 1)
    return square_mask(height, width, size, top, left)
  return jax.vmap(one)(indices_n)


def clamp(images_nhwc: jax.Array, known_nhw1: jax.Array, truth_nhwc: jax.Array
          ) -> jax.Array:
  """The known pixels exactly the truth's, the missing ones the images'."""
  return jnp.where(known_nhw1 > 0.5, truth_nhwc, images_nhwc)


def mean_fill(images_nhwc: jax.Array, known_nhw1: jax.Array) -> jax.Array:
  """The baseline: missing pixels set to the mean of the image's known pixels, per
  channel."""
  total = jnp.sum(images_nhwc * known_nhw1, axis=(1, 2), keepdims=True)
  count = jnp.maximum(jnp.sum(known_nhw1, axis=(1, 2), keepdims=True), 1.0)
  return clamp(jnp.broadcast_to(total / count, images_nhwc.shape), known_nhw1,
               images_nhwc)


def iterate_inpaint(targets_nhwc: jax.Array, known_nhw1: jax.Array, *,
                    reconstruct: Callable[[jax.Array], jax.Array],
                    num_steps: int) -> jax.Array:
  """Iterated reconstruction with the known pixels clamped (Rezende et al. 2014's
  imputation, with posterior means): x <- clamp(decode(encode(x))), from the mean fill.

  Args:
    targets_nhwc: the images; only their known pixels are read.
    known_nhw1: the known masks.
    reconstruct: images (N, H, W, C) -> the VAE's mean reconstructions, same shape.
    num_steps: encode/decode rounds (1: a single reconstruction of the mean fill).

  Returns:
    (N, H, W, C) images whose known pixels are exactly the targets'.
  """
  def body(_, images):
    return clamp(reconstruct(images), known_nhw1, targets_nhwc)
  return jax.lax.fori_loop(0, num_steps, body, mean_fill(targets_nhwc, known_nhw1))


@dataclasses.dataclass(frozen=True)
class LatentOptimisation:
  """Settings of `optimize_inpaint`: Adam on z of -log p(z | known pixels) under a
  Gaussian pixel model of standard deviation `sigma` (on the [-1, 1] scale)."""
  num_steps: int = 100
  learning_rate: float = 0.05
  sigma: float = 0.1


def latent_loss(latents_nz: jax.Array, targets_nhwc: jax.Array, known_nhw1: jax.Array,
                *, decode: Callable[[jax.Array], jax.Array], sigma: float) -> jax.Array:
  """Per image (N,): sum over known pixels of (decode(z) - x)^2 / (2 sigma^2) plus the
  prior term ||z||^2 / 2 (the negative log posterior, up to a constant)."""
  diff = (decode(latents_nz) - targets_nhwc) * known_nhw1
  reconstruction = jnp.sum(diff ** 2, axis=(1, 2, 3)) / (2.0 * sigma ** 2)
  return reconstruction + 0.5 * jnp.sum(latents_nz ** 2, axis=-1)


def optimize_inpaint(targets_nhwc: jax.Array, known_nhw1: jax.Array, z0_nz: jax.Array, *,
                     decode: Callable[[jax.Array], jax.Array], s: LatentOptimisation
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Latent optimisation: Adam on each image's z from `z0` (e.g. the encoding of the mean
  fill); the losses are per image, so the batch does not couple them.

  Args:
    targets_nhwc, known_nhw1: the images and their known masks.
    z0_nz: the starting latents.
    decode: latents (N, Z) -> mean images (N, H, W, C), differentiable.
    s: the settings.

  Returns:
    (the clamped result (N, H, W, C), the final latents (N, Z), the loss of every image
    before each step and after the last, (num_steps + 1, N)).
  """
  loss_fn = lambda z: latent_loss(z, targets_nhwc, known_nhw1, decode=decode,
                                  sigma=s.sigma)
  optimizer = optax.adam(s.learning_rate)

  def step(carry, _):
    z, opt_state = carry
    # Each image's loss depends on its own z only: the sum's gradient is per image.
    losses, vjp = jax.vjp(loss_fn, z)
    grads, = vjp(jnp.ones_like(losses))
    updates, opt_state = optimizer.update(grads, opt_state, z)
    return (optax.apply_updates(z, updates), opt_state), losses

  (z, _), history = jax.lax.scan(step, (z0_nz, optimizer.init(z0_nz)), None,
                                 length=s.num_steps)
  history = jnp.concatenate([history, loss_fn(z)[None]], axis=0)
  return clamp(decode(z), known_nhw1, targets_nhwc), z, history


def gan_inpaint(key: jax.Array, targets_nhwc: jax.Array, known_nhw1: jax.Array,
                z0_nz: jax.Array, indices_n: jax.Array, *, generate: Callable,
                features: Callable, s: inversion.ProjectorSettings,
                labels_n: Optional[jax.Array] = None
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Masked inversion: the projector fits z to the known pixels only, then the known
  pixels are pasted over G(z) (`inversion.composite`).

  Args:
    key: the projector's key; image i uses fold_in(key, indices_n[i]).
    targets_nhwc, known_nhw1: the images and their known masks.
    z0_nz: starting latents.
    indices_n: the images' indices (their keys).
    generate: latents (B, Z)[, labels (B,)] -> images, traceable (`bind_generator`).
    features: images -> features (B, D) of the perceptual distance.
    s: the projector's settings.
    labels_n: a conditional generator's class of each image.

  Returns:
    (the composite (N, H, W, C), the latents (N, Z), the final projector loss (N,)).
  """
  options = dict(features=features, encode=None, s=s)
  if labels_n is None:
    z, loss = inversion.project(key, targets_nhwc, known_nhw1, z0_nz, indices_n,
                                generate=generate, **options)
    images = generate(z)
  else:
    def one(index, target, known, z0, label):
      bound = lambda latents: generate(latents, jnp.broadcast_to(label, latents.shape[:1]))
      return inversion.project_one(jax.random.fold_in(key, index), target, known, z0,
                                   generate=bound, **options)
    z, loss = jax.vmap(one)(indices_n, targets_nhwc, known_nhw1, z0_nz, labels_n)
    images = generate(z, labels_n)
  return inversion.composite(targets_nhwc, images, known_nhw1), z, loss


def masked_psnr(outputs_nhwc: jax.Array, targets_nhwc: jax.Array,
                known_nhw1: jax.Array) -> jax.Array:
  """PSNR (dB, peak 1 on [0, 1] images) over each image's missing pixels only: (N,)."""
  missing = 1.0 - known_nhw1
  diff = (outputs_nhwc - targets_nhwc) / 2.0           # [-1, 1] -> [0, 1] units.
  count = jnp.maximum(jnp.sum(missing, axis=(1, 2, 3)) * outputs_nhwc.shape[-1], 1.0)
  mse = jnp.sum(diff ** 2 * missing, axis=(1, 2, 3)) / count
  return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))
