"""Everything a GAN run computes, built once from a config: modules, optimizers, and the
jitted initialisation, training step and sampler over a device mesh.

The training loop, the tests and the benchmarks all build their programs here, so they
run the same code.
"""

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections
import optax
from jax.sharding import Mesh

from cnnjax.losses.gan import get_gan_loss
from cnnjax.models import build_gan
from cnnjax.train import parallel
from cnnjax.train.gan_step import gan_train_step
from cnnjax.train.state import SAMPLE_STREAM, TRAIN_STREAM, GanState, init_gan_state


def make_optimizer(learning_rate: float, b1: float, b2: float) -> optax.GradientTransformation:
  """Adam, as in DCGAN (learning rate 2e-4, b1 = 0.5 by default in the configs)."""
  return optax.adam(learning_rate, b1=b1, b2=b2)


def fixed_sample_latents(seed: int, num_samples: int, latent_dim: int) -> jax.Array:
  """The latents of every sample grid of a run: the same at each step, so grids compare."""
  key = jax.random.fold_in(jax.random.key(seed), SAMPLE_STREAM)
  return jax.random.normal(key, (num_samples, latent_dim))


@dataclasses.dataclass(frozen=True)
class GanProgram:
  """A GAN's modules and its jitted functions over `mesh`.

  Attributes:
    generator, discriminator: the Flax modules (BatchNorm synchronised over the mesh).
    per_device_step: `gan_train_step` with its dependencies bound, for shard_map or pmap.
    init_state: `() -> GanState`, replicated over the mesh, deterministic from the seed.
    train_step: `(state, batch) -> (state, metrics)`, data-parallel, donating `state`.
    sample: `(generator_state, latents (N, Z)) -> images (N, H, W, C)` in inference mode.
    latent_dim: size of the latent vectors.
    grid_latents: the fixed latents (num_samples, Z) of every sample grid of the run.
  """
  mesh: Mesh
  generator: nn.Module
  discriminator: nn.Module
  per_device_step: Callable[..., tuple[GanState, dict[str, jax.Array]]]
  init_state: Callable[[], GanState]
  train_step: Callable[[GanState, dict[str, jax.Array]],
                       tuple[GanState, dict[str, jax.Array]]]
  sample: Callable[[Any, jax.Array], jax.Array]
  latent_dim: int
  grid_latents: jax.Array

  def generate(self, state: GanState, latents_nz: jax.Array) -> jax.Array:
    """Images (N, H, W, C) in [-1, 1] from latents, with the generator in inference mode."""
    return self.sample(state.generator, latents_nz)

  def grids(self, state: GanState) -> dict[str, jax.Array]:
    """The run's sample grid: the same latents at every step, so grids compare."""
    return {"samples": self.generate(state, self.grid_latents)}


def build_gan_program(config: ml_collections.ConfigDict, *, mesh: Mesh, channels: int,
                      num_classes: int | None = None) -> GanProgram:
  """Builds the `GanProgram` of a (validated) config for images with `channels`.

  `num_classes` is the dataset's (None: unlabelled); unconditional GANs ignore it.
  """
  del num_classes
  resolution = config.data.image_size
  generator, discriminator = build_gan(config.model, resolution=resolution,
                                       channels=channels, axis_name=parallel.DATA_AXIS)
  g_optimizer = make_optimizer(config.optim.g_lr, config.optim.b1, config.optim.b2)
  d_optimizer = make_optimizer(config.optim.d_lr, config.optim.b1, config.optim.b2)
  init = functools.partial(
      init_gan_state, seed=config.seed, generator=generator,
      discriminator=discriminator, g_optimizer=g_optimizer, d_optimizer=d_optimizer,
      latent_dim=config.model.latent_dim, image_shape=(resolution, resolution, channels))
  per_device_step = functools.partial(
      gan_train_step, generator=generator, discriminator=discriminator,
      g_optimizer=g_optimizer, d_optimizer=d_optimizer,
      loss=get_gan_loss(config.loss.name), axis_name=parallel.DATA_AXIS)
  train_step = parallel.make_parallel_train_step(
      per_device_step, mesh=mesh, batch_size=config.train.batch_size,
      latent_dim=config.model.latent_dim, latent_stream=TRAIN_STREAM,
      skip_nonfinite=config.train.on_nonfinite == "skip")

  @jax.jit
  def sample(generator_state, latents_nz):
    return generator.apply({"params": generator_state.params,
                            "batch_stats": generator_state.batch_stats},
                           latents_nz, train=False)

  return GanProgram(
      mesh=mesh, generator=generator, discriminator=discriminator,
      per_device_step=per_device_step,
      init_state=jax.jit(init, out_shardings=parallel.replicated(mesh)),
      train_step=train_step, sample=sample, latent_dim=config.model.latent_dim,
      grid_latents=parallel.put_replicated(fixed_sample_latents(
          config.seed, config.train.num_samples, config.model.latent_dim), mesh))
