"""Training state: one pytree of arrays holding everything that decides a run's future."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from cnnjax.train.divergence import DivergenceRecord
from cnnjax.train.ema import init_ema

# Independent random streams derived from the run's seed with `jax.random.fold_in`.
TRAIN_STREAM = 0    # Folded with the step: latents and noise of each training step.
SAMPLE_STREAM = 1   # Fixed latents of the sample grids, identical at every step.
INIT_STREAM = 2     # Parameter initialisation.
# (3 and 4 are the VAE step's.)
LABEL_STREAM = 5    # Folded with the step: the class labels a conditional generator is given.
NOISE_STREAM = 6    # Folded with the step: per-example keys of augmentation and penalties.


@struct.dataclass
class PlayerState:
  """Parameters, BatchNorm statistics and optimizer state of one network."""
  params: Any
  batch_stats: Any
  opt_state: Any


@struct.dataclass
class SingleNetworkState:
  """State of a run that trains one network (a classifier, a style transformer).

  Attributes:
    step: number of completed training steps (int32 scalar).
    rng: raw key data (uint32) of the run's base key; each step folds in its number.
    model: the network's `PlayerState`.
    divergence: steps with non-finite metrics (see `cnnjax.train.divergence`).
  """
  step: jax.Array
  rng: jax.Array
  model: PlayerState
  divergence: DivergenceRecord

  def step_key(self, stream: int) -> jax.Array:
    """The key of `stream` for the current step."""
    base = jax.random.fold_in(jax.random.wrap_key_data(self.rng), stream)
    return jax.random.fold_in(base, self.step)


@struct.dataclass
class GanState:
  """State of a GAN run.

  Attributes:
    step: number of completed training steps (int32 scalar).
    rng: raw key data (uint32) of the run's base key; each step folds in its number.
    generator: the generator's `PlayerState`.
    discriminator: the discriminator's `PlayerState`.
    divergence: steps with non-finite metrics (see `cnnjax.train.divergence`).
    generator_ema: the exponential moving average of the generator's parameters
      (`cnnjax.train.ema`), or {} when the run keeps none; checkpointed with the rest.
  """
  step: jax.Array
  rng: jax.Array
  generator: PlayerState
  discriminator: PlayerState
  divergence: DivergenceRecord
  generator_ema: Any

  def step_key(self, stream: int) -> jax.Array:
    """The key of `stream` for the current step."""
    base = jax.random.fold_in(jax.random.wrap_key_data(self.rng), stream)
    return jax.random.fold_in(base, self.step)


def base_key_data(seed: int) -> jax.Array:
  """Raw uint32 key data of the run's base key (storable in checkpoints)."""
  return jax.random.key_data(jax.random.key(seed))


def init_player(module: nn.Module, optimizer: optax.GradientTransformation,
                key: jax.Array, *example_inputs: jax.Array) -> PlayerState:
  """Initialises a network (called on `example_inputs`) and its optimizer state."""
  variables = module.init({"params": key}, *example_inputs, train=False)
  params = variables["params"]
  return PlayerState(params=params, batch_stats=variables.get("batch_stats", {}),
                     opt_state=optimizer.init(params))


def init_gan_state(*, seed: int, generator: nn.Module, discriminator: nn.Module,
                   g_optimizer: optax.GradientTransformation,
                   d_optimizer: optax.GradientTransformation, latent_dim: int,
                   image_shape: tuple[int, int, int], conditional_generator: bool = False,
                   conditional_discriminator: bool = False,
                   keep_ema: bool = False) -> GanState:
  """Creates the initial `GanState`, deterministically from `seed`.

  Args:
    seed: the run's seed.
    generator, discriminator: the modules.
    g_optimizer, d_optimizer: their optimizers.
    latent_dim: size of the latent vectors.
    image_shape: (H, W, C).
    conditional_generator, conditional_discriminator: whether each takes labels.
    keep_ema: start an EMA of the generator's parameters (a copy of them).
  """
  rng = base_key_data(seed)
  init_key = jax.random.fold_in(jax.random.key(seed), INIT_STREAM)
  g_key, d_key = jax.random.split(init_key)
  labels = lambda conditional: (jnp.zeros((1,), jnp.int32),) if conditional else ()
  generator_state = init_player(generator, g_optimizer, g_key,
                                jnp.zeros((1, latent_dim), jnp.float32),
                                *labels(conditional_generator))
  return GanState(
      step=jnp.zeros((), jnp.int32),
      rng=rng,
      generator=generator_state,
      discriminator=init_player(discriminator, d_optimizer, d_key,
                                jnp.zeros((1, *image_shape), jnp.float32),
                                *labels(conditional_discriminator)),
      divergence=DivergenceRecord.empty(),
      generator_ema=init_ema(generator_state.params) if keep_ema else {},
  )
