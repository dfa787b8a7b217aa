"""Paths through a generator's latent space: interpolations, traversals, truncation.

Pure functions of latents (and of class weights, for conditional models); they know
nothing of the network that decodes them (`cnnjax.editing.edit_runs` binds one). Batch
them with `jax.vmap` and shard the leading axis over the mesh.

* `slerp` / `lerp` between two latents and `path` through K >= 2 anchors (White 2016:
  spherical interpolation keeps interpolants at the norm typical of N(0, I) samples,
  where linear interpolation passes through the low-norm middle of the ball).
* `traverse` along a direction (a coordinate's unit vector or any direction).
* the truncation trick: `truncate` pulls z towards the mean latent (psi = 1: z,
  psi = 0: the mean; Karras et al. 2019 on w, here on z whose mean is 0) and
  `resample_truncated` redraws every coordinate beyond a threshold (Brock et al. 2019).
* `class_weight_path`: one-hot class weights mixed linearly from class to class, which
  the conditional generators and the CVAE take in place of integer labels.
"""

from typing import Literal

import jax
import jax.numpy as jnp

METHODS = ("linear", "slerp")
_PARALLEL_EPS = 1e-6    # Below this sin(angle), slerp falls back to lerp.
MAX_RESAMPLE_ROUNDS = 1000


def lerp(a_z: jax.Array, b_z: jax.Array, t_t: jax.Array) -> jax.Array:
  """Linear interpolation: (Z,), (Z,), fractions (T,) -> (T, Z)."""
  t = t_t[:, None]
  return (1.0 - t) * a_z + t * b_z


def slerp(a_z: jax.Array, b_z: jax.Array, t_t: jax.Array) -> jax.Array:
  """Spherical interpolation: (Z,), (Z,), fractions (T,) -> (T, Z).

  sin((1 - t) w) / sin(w) * a + sin(t w) / sin(w) * b, w the angle between a and b; for
  nearly parallel (or zero) latents, where sin(w) vanishes, the linear interpolation.
  t = 0 and t = 1 give a and b; latents of equal norm keep that norm along the path.
  """
  norms = jnp.linalg.norm(a_z) * jnp.linalg.norm(b_z)
  cosine = jnp.clip(jnp.dot(a_z, b_z) / jnp.maximum(norms, 1e-12), -1.0, 1.0)
  omega = jnp.arccos(cosine)
  sin_omega = jnp.sin(omega)
  parallel = sin_omega < _PARALLEL_EPS
  safe = jnp.where(parallel, 1.0, sin_omega)
  t = t_t[:, None]
  spherical = (jnp.sin((1.0 - t) * omega) * a_z + jnp.sin(t * omega) * b_z) / safe
  return jnp.where(parallel, lerp(a_z, b_z, t_t), spherical)


def segment_fractions(num_steps: int) -> jax.Array:
  """(num_steps,) fractions 0, ..., 1 of one segment, both ends included."""
  return jnp.linspace(0.0, 1.0, num_steps)


def path(anchors_kz: jax.Array, num_steps: int,
         method: Literal["linear", "slerp"] = "slerp") -> jax.Array:
  """A path through K >= 2 anchors, `num_steps` points per segment, shared ends once.

  Args:
    anchors_kz: the latents (or class weights) to pass through, in order.
    num_steps: points per segment (>= 2), both anchors included.
    method: "linear" or "slerp".

  Returns:
    ((K - 1) * (num_steps - 1) + 1, Z): anchor k at index k * (num_steps - 1).
  """
  if method not in METHODS:
    raise ValueError(f"Unknown interpolation {method!r}: use one of {METHODS}.")
  interpolate = lerp if method == "linear" else slerp
  t_t = segment_fractions(num_steps)
  segments = jax.vmap(lambda a, b: interpolate(a, b, t_t))(anchors_kz[:-1], anchors_kz[1:])
  body = segments[:, :-1].reshape(-1, anchors_kz.shape[-1])
  return jnp.concatenate([body, anchors_kz[-1:]], axis=0)


def path_length(num_anchors: int, num_steps: int) -> int:
  """The number of points `path` returns."""
  return (num_anchors - 1) * (num_steps - 1) + 1


def traverse(latent_z: jax.Array, direction_z: jax.Array, offsets_s: jax.Array
             ) -> jax.Array:
  """z + s * d for each offset s: (Z,), (Z,), (S,) -> (S, Z)."""
  return latent_z + offsets_s[:, None] * direction_z


def coordinate_directions(coordinates: jax.Array, latent_dim: int) -> jax.Array:
  """Unit vectors (C, Z) of the latent coordinates (C,)."""
  return jax.nn.one_hot(coordinates, latent_dim)


def unit(direction_z: jax.Array) -> jax.Array:
  """The direction scaled to norm 1."""
  return direction_z / jnp.maximum(jnp.linalg.norm(direction_z), 1e-12)


def truncate(latents_nz: jax.Array, psi: jax.Array | float,
             mean_z: jax.Array | float = 0.0) -> jax.Array:
  """The truncation trick: mean + psi * (z - mean). psi = 1 is the identity, psi = 0 the
  mean latent (for z ~ N(0, I), the origin)."""
  return mean_z + psi * (latents_nz - mean_z)


def resample_truncated(key: jax.Array, latents_z: jax.Array,
                       threshold: jax.Array | float) -> jax.Array:
  """BigGAN's truncation: every coordinate with |z_i| > threshold is redrawn from N(0, 1)
  until it falls inside; coordinates already inside are kept.

  Round r draws from fold_in(key, r); after `MAX_RESAMPLE_ROUNDS` rounds (reached only
  for thresholds far below 0.01) the rest are clipped to the threshold. The result is
  distributed as N(0, 1) truncated to [-threshold, threshold] coordinate-wise.

  Args:
    key: this latent's key (fold_in the batch index for a batch).
    latents_z: (Z,) latents drawn from N(0, I).
    threshold: > 0.
  """
  def outside(z):
    return jnp.abs(z) > threshold

  def cond(carry):
    z, round_ = carry
    return jnp.any(outside(z)) & (round_ < MAX_RESAMPLE_ROUNDS)

  def body(carry):
    z, round_ = carry
    fresh = jax.random.normal(jax.random.fold_in(key, round_), z.shape, z.dtype)
    return jnp.where(outside(z), fresh, z), round_ + 1

  z, _ = jax.lax.while_loop(cond, body, (latents_z, jnp.zeros((), jnp.int32)))
  return jnp.clip(z, -threshold, threshold)


def class_weight_path(classes_k: jax.Array, num_classes: int, num_steps: int
                      ) -> jax.Array:
  """Class weights from class to class (K >= 2 int classes): linear mixtures of their
  one-hot vectors, `path_length(K, num_steps)` x num_classes, each row summing to 1."""
  return path(jax.nn.one_hot(classes_k, num_classes), num_steps, "linear")
