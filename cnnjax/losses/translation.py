"""Objectives of image-to-image translation (pix2pix, CycleGAN), on PatchGAN logits."""

import jax
import jax.numpy as jnp
import optax

GAN_LOSSES = ("vanilla", "lsgan")


def patch_gan_loss(logits: jax.Array, is_real: bool, name: str) -> jax.Array:
  """Mean over patches and examples of the loss of labelling `logits` real / fake.

  `vanilla`: sigmoid cross-entropy (pix2pix's cGAN objective; the generator uses it with
  `is_real=True`, the non-saturating form); `lsgan`: (D - label)^2 with labels 1 / 0
  (Mao et al.; CycleGAN's).
  """
  target = jnp.ones_like(logits) if is_real else jnp.zeros_like(logits)
  if name == "vanilla":
    return optax.sigmoid_binary_cross_entropy(logits, target).mean()
  if name == "lsgan":
    return jnp.mean((logits - target) ** 2)
  raise ValueError(f"Unknown GAN loss {name!r}: use one of {', '.join(GAN_LOSSES)}.")


def mean_abs_error(a: jax.Array, b: jax.Array) -> jax.Array:
  """L1 distance per pixel and channel (pix2pix's L1 term, CycleGAN's cycle/identity)."""
  return jnp.mean(jnp.abs(a - b))
