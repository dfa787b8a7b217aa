"""The VAE's training state and its training step, written per device.

`vae_train_step` is pure: its dependencies (model, optimizer, likelihood, KL weight) are
bound by keyword with `functools.partial`, so the same function runs under
`jax.shard_map` (see `cnnjax.train.parallel`) or `jax.pmap`. Its randomness does not
depend on the number of devices: the reparameterisation noise is the step's global
latents (drawn by `parallel.make_parallel_train_step`), and each image is binarised
with a key folded from its index in the global batch.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from cnnjax.losses.vae import Likelihood, bits_per_dim, elbo_terms
from cnnjax.train.divergence import DivergenceRecord
from cnnjax.train.state import INIT_STREAM, base_key_data

# Random streams of a VAE run beyond those of `cnnjax.train.state` (0 to 2).
TARGET_STREAM = 3      # Folded with the step: dynamic binarisation of training images.
HELD_OUT_STREAM = 4    # Fixed noise of the periodic held-out ELBO, identical every time.


@struct.dataclass
class HeldOutRecord:
  """The latest held-out ELBO computed during training.

  Attributes:
    step: the step it was computed at (int32; -1: never).
    neg_elbo: mean negative ELBO in nats per image (float32).
    bits_per_dim: the same in bits per dimension (float32).
  """
  step: jax.Array
  neg_elbo: jax.Array
  bits_per_dim: jax.Array

  @classmethod
  def empty(cls) -> "HeldOutRecord":
    return cls(step=-jnp.ones((), jnp.int32), neg_elbo=jnp.zeros((), jnp.float32),
               bits_per_dim=jnp.zeros((), jnp.float32))


@struct.dataclass
class VaeState:
  """State of a VAE run.

  Attributes:
    step: number of completed training steps (int32 scalar).
    rng: raw key data (uint32) of the run's base key; each step folds in its number.
    params: the `ConvVae`'s parameters.
    opt_state: the optimizer's state.
    divergence: steps with non-finite metrics (see `cnnjax.train.divergence`).
    held_out: the latest held-out ELBO (see `HeldOutRecord`).
  """
  step: jax.Array
  rng: jax.Array
  params: Any
  opt_state: Any
  divergence: DivergenceRecord
  held_out: HeldOutRecord

  def step_key(self, stream: int) -> jax.Array:
    """The key of `stream` for the current step."""
    stream_key = jax.random.fold_in(jax.random.wrap_key_data(self.rng), stream)
    return jax.random.fold_in(stream_key, self.step)


def init_vae_state(*, seed: int, vae: nn.Module, optimizer: optax.GradientTransformation,
                   image_shape: tuple[int, int, int]) -> VaeState:
  """Creates the initial `VaeState`, deterministically from `seed`."""
  init_key = jax.random.fold_in(jax.random.key(seed), INIT_STREAM)
  params = vae.init({"params": init_key}, jnp.zeros((1, *image_shape), jnp.float32),
                    jnp.zeros((1,), jnp.int32))["params"]
  return VaeState(step=jnp.zeros((), jnp.int32), rng=base_key_data(seed), params=params,
                  opt_state=optimizer.init(params), divergence=DivergenceRecord.empty(),
                  held_out=HeldOutRecord.empty())


def global_example_keys(key: jax.Array, num_local: int, axis_name: str) -> jax.Array:
  """One key per example of this device's shard, folded from its global batch index.

  Returns:
    keys (num_local,), the same for an example whatever the number of devices.
  """
  first = jax.lax.axis_index(axis_name) * num_local
  return jax.vmap(lambda index: jax.random.fold_in(key, index))(
      first + jnp.arange(num_local))


def vae_train_step(state: VaeState, batch: dict[str, jax.Array], noise_bz: jax.Array, *,
                   vae: nn.Module, optimizer: optax.GradientTransformation,
                   likelihood: Likelihood, kl_weight: Callable[[jax.Array], jax.Array],
                   conditional: bool, axis_name: str
                   ) -> tuple[VaeState, dict[str, jax.Array]]:
  """One Adam step on the (beta-weighted) negative ELBO, on one device's shard.

  Args:
    state: the replicated training state.
    batch: this device's shard: `image` (b, H, W, C) in [-1, 1] and, for a
      conditional VAE, `label` (b,) int32.
    noise_bz: this device's shard of the step's standard normal latents (b, Z): the
      reparameterisation noise.
    vae: the `ConvVae`.
    optimizer: the optax transformation.
    likelihood: the pixel likelihood (maps images to targets, see `cnnjax.losses.vae`).
    kl_weight: `step -> beta` (warm-up schedule) of the KL term.
    conditional: whether the VAE takes the batch's labels.
    axis_name: the mapped axis over which gradients and metrics are averaged.

  Returns:
    The new state and scalar metrics averaged over devices: `loss` (reconstruction +
    beta KL), `neg_elbo` (beta = 1), `reconstruction`, `kl` (nats per image),
    `bits_per_dim` (of `neg_elbo`), `beta` and `grad_norm`.
  """
  images = batch["image"]
  labels = batch["label"] if conditional else None
  keys = global_example_keys(state.step_key(TARGET_STREAM), images.shape[0], axis_name)
  targets = jax.vmap(lambda image, key: likelihood.targets(image[None], key)[0])(
      images, keys)
  beta = kl_weight(state.step)

  def loss_fn(params):
    log_likelihood_b, kl_b = elbo_terms(vae, params, targets, labels, noise_bz, likelihood)
    reconstruction, kl = -jnp.mean(log_likelihood_b), jnp.mean(kl_b)
    return reconstruction + beta * kl, (reconstruction, kl)

  (loss, (reconstruction, kl)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  grads = jax.lax.pmean(grads, axis_name)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  neg_elbo = reconstruction + kl
  metrics = {
      "loss": loss,
      "neg_elbo": neg_elbo,
      "reconstruction": reconstruction,
      "kl": kl,
      "bits_per_dim": bits_per_dim(neg_elbo, images[0].size,
                                   likelihood.nats_offset_per_dim),
      "beta": beta,
      "grad_norm": optax.tree.norm(grads),
  }
  metrics = jax.lax.pmean(metrics, axis_name)
  new_state = state.replace(params=optax.apply_updates(state.params, updates),
                            opt_state=opt_state)
  return new_state, metrics
