"""Per-image bounds on a VAE's log p(x): the one-sample ELBO (analytic KL) and the IWAE
bound with k importance samples, sharded over the data mesh.

Each image gets its own key, folded from the seed and its index in the split, for its
binarisation (Bernoulli likelihoods), its ELBO noise and its k importance samples, so
the numbers depend neither on the batch size nor on the number of devices. The k
importance samples are drawn and decoded `chunk` at a time, their log-sum-exp
accumulated, so memory does not grow with k. Used by the training step's held-out ELBO
and by the test-set evaluation (`cnnjax.evaluation.vae_likelihood`).
"""

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from cnnjax.losses.vae import Likelihood, elbo_terms, importance_log_weights
from cnnjax.models.vae import ConvVae, with_upsample
from cnnjax.train import parallel

# What each image's key is folded with, per use.
_TARGETS, _ELBO_NOISE, _IMPORTANCE_NOISE = 0, 1, 2


def example_bounds(params: Any, images_bhwc: jax.Array, labels_b: jax.Array,
                   indices_b: jax.Array, key_data: jax.Array, *, vae: ConvVae,
                   likelihood: Likelihood, conditional: bool, num_importance: int,
                   chunk: int) -> dict[str, jax.Array]:
  """Per-image bounds on log p(x), in nats.

  Args:
    params: the `ConvVae`'s parameters.
    images_bhwc: images (B, H, W, C) in [-1, 1].
    labels_b: their labels (B,) int32 (ignored unless `conditional`).
    indices_b: each image's index in its split (B,), which decides its randomness.
    key_data: raw key data of the evaluation's base key.
    vae, likelihood, conditional: the model.
    num_importance: k of the IWAE bound (0: ELBO only).
    chunk: importance samples decoded at once.

  Returns:
    `elbo` (B,) (one-sample estimate, analytic KL) and, when num_importance > 0,
    `iwae` (B,).
  """
  labels_b = labels_b if conditional else None
  keys = jax.vmap(lambda index: jax.random.fold_in(
      jax.random.wrap_key_data(key_data), index))(indices_b)
  fold = lambda use: jax.vmap(lambda key: jax.random.fold_in(key, use))(keys)
  targets = jax.vmap(lambda image, key: likelihood.targets(image[None], key)[0])(
      images_bhwc, fold(_TARGETS))
  latent_dim = vae.encoder.latent_dim
  noise_bz = jax.vmap(lambda key: jax.random.normal(key, (latent_dim,)))(fold(_ELBO_NOISE))
  log_likelihood_b, kl_b = elbo_terms(vae, params, targets, labels_b, noise_bz, likelihood)
  bounds = {"elbo": log_likelihood_b - kl_b}
  if num_importance <= 0:
    return bounds

  chunk = min(chunk, num_importance)
  mean_bz, log_variance_bz = vae.apply(
      {"params": params}, likelihood.encoder_inputs(targets), labels_b, method="encode")
  importance_keys = fold(_IMPORTANCE_NOISE)

  def accumulate(log_sum_b, chunk_index):
    noise_bkz = jax.vmap(lambda key: jax.random.normal(
        jax.random.fold_in(key, chunk_index), (chunk, latent_dim)))(importance_keys)
    log_weights_bk = importance_log_weights(vae, params, targets, labels_b, mean_bz,
                                            log_variance_bz, noise_bkz, likelihood)
    is_sample = chunk_index * chunk + jnp.arange(chunk) < num_importance  # Last chunk.
    log_weights_bk = jnp.where(is_sample, log_weights_bk, -jnp.inf)
    return jnp.logaddexp(log_sum_b, jax.nn.logsumexp(log_weights_bk, axis=-1)), None

  num_chunks = -(-num_importance // chunk)
  log_sum_b, _ = jax.lax.scan(accumulate, jnp.full(images_bhwc.shape[:1], -jnp.inf),
                              jnp.arange(num_chunks))
  bounds["iwae"] = log_sum_b - math.log(num_importance)
  return bounds


def make_bounds_fn(vae: ConvVae, likelihood: Likelihood, mesh: Mesh, *,
                   conditional: bool, num_importance: int, chunk: int,
                   upsample: str = "flax"):
  """`example_bounds` jitted, with the batch sharded over `mesh` (B a multiple of its
  size): `(params, images, labels, indices, key_data) -> {name: (B,)}`.

  The decoder runs with the transposed convolution `upsample` (same parameters; "flax"
  is the faster one without gradients, see `cnnjax.models.vae.with_upsample`).
  """
  per_device = functools.partial(
      example_bounds, vae=with_upsample(vae, upsample), likelihood=likelihood,
      conditional=conditional, num_importance=num_importance, chunk=chunk)
  data = P(parallel.DATA_AXIS)
  return jax.jit(jax.shard_map(per_device, mesh=mesh,
                               in_specs=(P(), data, data, data, P()), out_specs=data,
                               check_vma=False))
