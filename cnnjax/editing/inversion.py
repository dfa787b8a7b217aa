"""Optimisation-based GAN inversion (StyleGAN2's projector, on z).

Adam on the latent with a learning-rate ramp up and down, a latent-noise schedule decaying
to 0, and pixel MSE plus a perceptual distance in a feature space given by the caller
(the project's own classifier features); an optional mask [N, H, W, 1] restricts the loss
to known pixels (inpainting), an optional encoder regulariser pulls z towards E(G(z))
(in-domain inversion, Zhu et al. 2020). Each image has its own key, fold_in(key, index).

Tested on a toy generator and on the tiny DCGAN run (tests/test_inversion.py).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class ProjectorSettings:
  """Every hyperparameter of the projector (from the command's flags/config)."""
  num_steps: int = 500
  learning_rate: float = 0.1
  lr_rampup: float = 0.05      # fraction of steps ramping up
  lr_rampdown: float = 0.25    # fraction of steps ramping down (cosine)
  noise_scale: float = 0.05    # initial latent noise, times the latents' std
  noise_ramp: float = 0.75     # fraction of steps over which noise decays to 0
  pixel_weight: float = 1.0
  feature_weight: float = 1.0
  encoder_weight: float = 0.0  # in-domain regulariser ||z - E(G(z))||^2
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8


def learning_rate_at(t: jax.Array, s: ProjectorSettings) -> jax.Array:
  """StyleGAN2's schedule: t in [0, 1]."""
  ramp = jnp.minimum(1.0, (1.0 - t) / s.lr_rampdown)
  ramp = 0.5 - 0.5 * jnp.cos(ramp * math.pi)
  ramp = ramp * jnp.minimum(1.0, t / s.lr_rampup)
  return s.learning_rate * ramp


def noise_at(t: jax.Array, s: ProjectorSettings) -> jax.Array:
  return s.noise_scale * jnp.maximum(0.0, 1.0 - t / s.noise_ramp) ** 2


def inversion_loss(z_d, target_hwc, mask_hw1, *, generate, features, encode,
                   s: ProjectorSettings):
  """Loss of one latent against one target (mask 1 = known pixel)."""
  image = generate(z_d[None])[0]
  diff = (image - target_hwc) * mask_hw1
  pixel = jnp.sum(diff ** 2) / jnp.maximum(jnp.sum(mask_hw1) * image.shape[-1], 1.0)
  f_img = features((image * mask_hw1)[None])[0]
  f_tgt = features((target_hwc * mask_hw1)[None])[0]
  feature = jnp.mean((f_img - f_tgt) ** 2)
  loss = s.pixel_weight * pixel + s.feature_weight * feature
  if encode is not None and s.encoder_weight:
    loss = loss + s.encoder_weight * jnp.mean((z_d - encode(image[None])[0]) ** 2)
  return loss, (pixel, feature)


def project_one(key, target_hwc, mask_hw1, z0_d, *, generate, features, encode,
                s: ProjectorSettings):
  """Adam on z for one image; returns (z, final loss)."""
  loss_fn = functools.partial(inversion_loss, generate=generate, features=features,
                              encode=encode, s=s)
  grad_fn = jax.grad(lambda z: loss_fn(z, target_hwc, mask_hw1)[0])

  def body(i, carry):
    z, m, v = carry
    t = i / s.num_steps
    noise = noise_at(t, s) * jax.random.normal(jax.random.fold_in(key, i), z.shape)
    g = grad_fn(z + noise)
    m = s.b1 * m + (1 - s.b1) * g
    v = s.b2 * v + (1 - s.b2) * g * g
    mh = m / (1 - s.b1 ** (i + 1.0))
    vh = v / (1 - s.b2 ** (i + 1.0))
    z = z - learning_rate_at(t, s) * mh / (jnp.sqrt(vh) + s.eps)
    return z, m, v

  zeros = jnp.zeros_like(z0_d)
  z, _, _ = jax.lax.fori_loop(0, s.num_steps, body, (z0_d, zeros, zeros))
  return z, loss_fn(z, target_hwc, mask_hw1)[0]


def project(key, targets_nhwc, masks_nhw1, z0_nd, indices_n, *, generate: Callable,
            features: Callable, encode: Optional[Callable], s: ProjectorSettings):
  """Many images at once (vmapped; shard the leading axis over the mesh with jit)."""
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(indices_n)
  one = functools.partial(project_one, generate=generate, features=features,
                          encode=encode, s=s)
  return jax.vmap(one)(keys, targets_nhwc, masks_nhw1, z0_nd)


def composite(targets_nhwc, generated_nhwc, masks_nhw1):
  """Inpainting: known pixels from the target, the rest from the inversion."""
  return masks_nhw1 * targets_nhwc + (1 - masks_nhw1) * generated_nhwc


def bind_generator(program, state, labels_n=None) -> Callable:
  """A pure latents -> images function of a GAN run's generator (inference mode, the EMA
  weights when the run keeps them), traceable inside another jit (GanProgram.generate is
  a jit with compiler_options and cannot be). A conditional generator inverts with the
  given labels (one per image; the vmapped projector sees one image, so labels_n is a
  scalar label per call or None)."""
  params = state.generator_ema if program.uses_ema else state.generator.params
  variables = {"params": params, "batch_stats": state.generator.batch_stats}

  def generate(latents_nz, *labels):
    return program.generator.apply(variables, latents_nz, *labels, train=False)

  if labels_n is None:
    return generate
  return lambda latents_nz: generate(latents_nz, jnp.broadcast_to(labels_n, latents_nz.shape[:1]))
