"""Everything a GAN run computes, built once from a config: modules, optimizers, and the
jitted initialisation, training step and sampler over a device mesh.

The training loop, the tests and the benchmarks all build their programs here, so they
run the same code. Every member of the GAN family is a config field read here: the
backbone and conditioning (`model`), the objective and its penalties (`loss`), the
learning rates and the generator's EMA (`optim`), discriminator steps and DiffAugment
(`train`).
"""

import dataclasses
import functools
import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from cnnjax.errors import DatasetError
from cnnjax.losses.gan import get_gan_loss
from cnnjax.models import build_gan, is_conditional_discriminator, is_conditional_generator
from cnnjax.train import parallel
from cnnjax.train.gan_step import EmaSchedule, Regularization, gan_train_step
from cnnjax.train.state import (LABEL_STREAM, NOISE_STREAM, SAMPLE_STREAM, TRAIN_STREAM,
                                GanState, init_gan_state)


def make_optimizer(learning_rate: float, b1: float, b2: float) -> optax.GradientTransformation:
  """Adam, as in DCGAN (learning rate 2e-4, b1 = 0.5 by default in the configs)."""
  return optax.adam(learning_rate, b1=b1, b2=b2)


def fixed_sample_latents(seed: int, num_samples: int, latent_dim: int) -> jax.Array:
  """The latents of every sample grid of a run: the same at each step, so grids compare."""
  key = jax.random.fold_in(jax.random.key(seed), SAMPLE_STREAM)
  return jax.random.normal(key, (num_samples, latent_dim))


def grid_row_labels(count: int, classes: Sequence[int]) -> jax.Array:
  """Labels of `count` images tiled as `make_grid` does (ceil(sqrt(count)) per row):
  row r shows `classes[r % len(classes)]`. (count,) int32."""
  columns = math.ceil(math.sqrt(count))
  rows = jnp.arange(count, dtype=jnp.int32) // columns
  return jnp.asarray(classes, jnp.int32)[rows % len(classes)]


def draw_step_examples(state: GanState, *, batch_size: int, num_classes: int,
                       needs_noise: bool) -> dict[str, jax.Array]:
  """The per-example random numbers of a step, at the global batch's shape.

  Returns:
    `fake_label` (batch_size,) uniform in [0, num_classes) when `num_classes` > 0, and
    `noise_key` (batch_size, 2) raw keys when `needs_noise` (see `gan_step`).
  """
  draws = {}
  if num_classes:
    draws["fake_label"] = jax.random.randint(state.step_key(LABEL_STREAM), (batch_size,),
                                             0, num_classes, jnp.int32)
  if needs_noise:
    draws["noise_key"] = jax.random.key_data(
        jax.random.split(state.step_key(NOISE_STREAM), batch_size))
  return draws


@dataclasses.dataclass(frozen=True)
class GanProgram:
  """A GAN's modules and its jitted functions over `mesh`.

  Attributes:
    generator, discriminator: the Flax modules (BatchNorm synchronised over the mesh).
    per_device_step: `gan_train_step` with its dependencies bound, for shard_map or pmap.
    init_state: `() -> GanState`, replicated over the mesh, deterministic from the seed.
    train_step: `(state, batch) -> (state, metrics)`, data-parallel, donating `state`.
    sample: `(params, batch_stats, latents (N, Z)[, labels (N,)]) -> images
      (N, H, W, C)`, the generator in inference mode.
    latent_dim: size of the latent vectors.
    num_classes: classes of a conditional generator's labels; 0 if unconditional.
    uses_ema: whether samples come from the EMA of the generator's weights.
    grid_latents: the fixed latents of every sample grid of the run (for a conditional
      generator, each column's latent repeats down the class rows).
  """
  mesh: Mesh
  generator: nn.Module
  discriminator: nn.Module
  per_device_step: Callable[..., tuple[GanState, dict[str, jax.Array]]]
  init_state: Callable[[], GanState]
  train_step: Callable[[GanState, dict[str, jax.Array]],
                       tuple[GanState, dict[str, jax.Array]]]
  sample: Callable[..., jax.Array]
  latent_dim: int
  num_classes: int
  uses_ema: bool
  grid_latents: jax.Array

  def generate(self, state: GanState, latents_nz: jax.Array,
               labels_n: jax.Array | None = None) -> jax.Array:
    """Images (N, H, W, C) in [-1, 1] from latents, the generator in inference mode.

    The weights are the EMA's when the run keeps one. A conditional generator's labels
    (N,) default to `grid_row_labels` over every class (one class per grid row); an
    unconditional generator takes none.
    """
    params = state.generator_ema if self.uses_ema else state.generator.params
    batch_stats = state.generator.batch_stats
    if not self.num_classes:
      if labels_n is not None:
        raise ValueError("This GAN is unconditional: generate takes no labels.")
      return self.sample(params, batch_stats, latents_nz)
    if labels_n is None:
      labels_n = grid_row_labels(len(latents_nz), range(self.num_classes))
    return self.sample(params, batch_stats, latents_nz, labels_n)

  def grids(self, state: GanState) -> dict[str, jax.Array]:
    """The run's sample grid: the same latents at every step, so grids compare; for a
    conditional generator, one class per row."""
    return {"samples": self.generate(state, self.grid_latents)}


def _grid_latents(config: ml_collections.ConfigDict, conditional: bool) -> jax.Array:
  num_samples, latent_dim = config.train.num_samples, config.model.latent_dim
  latents = fixed_sample_latents(config.seed, num_samples, latent_dim)
  if not conditional:
    return latents
  columns = math.ceil(math.sqrt(num_samples))
  return latents[jnp.arange(num_samples) % columns]


def build_gan_program(config: ml_collections.ConfigDict, *, mesh: Mesh, channels: int,
                      num_classes: int | None = None) -> GanProgram:
  """Builds the `GanProgram` of a (validated) config for images with `channels`.

  Args:
    config: the GAN config.
    mesh: the data mesh.
    channels: image channels.
    num_classes: the dataset's classes (None: unlabelled); read by conditional GANs.

  Raises:
    DatasetError: a conditional GAN on a dataset without labels.
  """
  conditional = is_conditional_generator(config.model)
  if conditional and not num_classes:
    raise DatasetError(f"Dataset {config.data.name!r} has no 'label' class feature; "
                       "train the conditional GAN (model.g_conditioning) on a labelled "
                       "one, or set model.g_conditioning=none and model.d_conditioning=none.")
  num_classes = num_classes if conditional else 0
  resolution = config.data.image_size
  generator, discriminator = build_gan(config.model, resolution=resolution,
                                       channels=channels, axis_name=parallel.DATA_AXIS,
                                       num_classes=num_classes)
  g_optimizer = make_optimizer(config.optim.g_lr, config.optim.b1, config.optim.b2)
  d_optimizer = make_optimizer(config.optim.d_lr, config.optim.b1, config.optim.b2)
  uses_ema = config.optim.ema_decay > 0
  init = functools.partial(
      init_gan_state, seed=config.seed, generator=generator,
      discriminator=discriminator, g_optimizer=g_optimizer, d_optimizer=d_optimizer,
      latent_dim=config.model.latent_dim, image_shape=(resolution, resolution, channels),
      conditional_generator=conditional,
      conditional_discriminator=is_conditional_discriminator(config.model),
      keep_ema=uses_ema)
  regularization = Regularization(
      gp_weight=config.loss.gp_weight, r1_weight=config.loss.r1_weight,
      aux_class_weight=config.loss.aux_class_weight,
      augment_policy=config.train.diffaugment)
  per_device_step = functools.partial(
      gan_train_step, generator=generator, discriminator=discriminator,
      g_optimizer=g_optimizer, d_optimizer=d_optimizer,
      loss=get_gan_loss(config.loss.name), axis_name=parallel.DATA_AXIS,
      regularization=regularization, d_steps=config.train.d_steps,
      conditional_generator=conditional,
      conditional_discriminator=is_conditional_discriminator(config.model),
      ema=EmaSchedule(config.optim.ema_decay, config.optim.ema_start_step)
      if uses_ema else None)
  train_step = parallel.make_parallel_train_step(
      per_device_step, mesh=mesh, batch_size=config.train.batch_size,
      latent_dim=config.model.latent_dim, latent_stream=TRAIN_STREAM,
      skip_nonfinite=config.train.on_nonfinite == "skip",
      draw_examples=functools.partial(
          draw_step_examples, batch_size=config.train.batch_size,
          num_classes=num_classes,
          needs_noise=bool(config.train.diffaugment) or config.loss.gp_weight > 0),
      num_chunks=config.train.d_steps)

  @functools.partial(jax.jit, compiler_options=parallel.compiler_options(mesh))
  def sample(params, batch_stats, latents_nz, *labels_n):
    return generator.apply({"params": params, "batch_stats": batch_stats}, latents_nz,
                           *labels_n, train=False)

  return GanProgram(
      mesh=mesh, generator=generator, discriminator=discriminator,
      per_device_step=per_device_step,
      init_state=jax.jit(init, out_shardings=parallel.replicated(mesh)),
      train_step=train_step, sample=sample, latent_dim=config.model.latent_dim,
      num_classes=num_classes, uses_ema=uses_ema,
      grid_latents=parallel.put_replicated(_grid_latents(config, conditional), mesh))
