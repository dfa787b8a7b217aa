"""Everything a VAE run computes, built once from a config: the model, the likelihood,
the optimizer, and the jitted initialisation, training step, sampler and grids over a
device mesh.

With held-out images (`HeldOut`, given by the training loop), the training step also
computes the held-out ELBO every `eval.elbo_every` steps and at the last step (on device,
under `lax.cond`, with fixed noise) and keeps the latest value in the state, reported
as the metrics `test_neg_elbo`, `test_bits_per_dim` and `test_step` (the step it was
computed at); the grids then include reconstructions of the first held-out images.
"""

import dataclasses
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from cnnjax.data.pipeline import scale_to_unit_range
from cnnjax.errors import DatasetError
from cnnjax.train.vae_bounds import make_bounds_fn
from cnnjax.losses.vae import Likelihood, bits_per_dim, kl_weight, make_likelihood
from cnnjax.models.vae import ConvVae, build_vae
from cnnjax.train import parallel
from cnnjax.train.gan_program import fixed_sample_latents, make_optimizer
from cnnjax.train.state import TRAIN_STREAM
from cnnjax.train.vae_step import (HELD_OUT_STREAM, HeldOutRecord, VaeState,
                                   init_vae_state, vae_train_step)

TRAVERSAL_RANGE = 3.0   # Traversals sweep a latent from -3 to 3 around the posterior mean.
MAX_GRID_SIDE = 10


@dataclasses.dataclass(frozen=True)
class HeldOut:
  """Held-out images on the host: `images` (N, H, W, C) uint8, `labels` (N,) or None."""
  images: np.ndarray
  labels: np.ndarray | None


def likelihood_from_config(config: ml_collections.ConfigDict) -> Likelihood:
  """The `Likelihood` of a config's `likelihood` section."""
  section = config.likelihood
  return make_likelihood(section.name, binarize=section.binarize,
                         gaussian_scale=section.gaussian_scale or None,
                         num_bins=section.num_bins)


def _shard_held_out(held_out: HeldOut, num_examples: int, mesh: Mesh) -> dict[str, Any]:
  """The first `num_examples` images, padded to a multiple of the mesh and sharded."""
  images = held_out.images[:num_examples]
  count = len(images)
  padded = -(-count // mesh.size) * mesh.size
  pad = lambda x: np.pad(x, [(0, padded - count)] + [(0, 0)] * (x.ndim - 1))
  labels = (np.zeros(count, np.int32) if held_out.labels is None
            else held_out.labels[:count].astype(np.int32))
  return jax.device_put({"images": pad(scale_to_unit_range(images)), "labels": pad(labels),
                         "indices": np.arange(padded, dtype=np.int32),
                         "valid": np.arange(padded) < count},
                        parallel.data_sharded(mesh))


def _held_out_record(params, step, held_out, *, bounds_fn, key_data, num_dims,
                     likelihood: Likelihood) -> HeldOutRecord:
  elbo_n = bounds_fn(params, held_out["images"], held_out["labels"], held_out["indices"],
                     key_data)["elbo"]
  valid = held_out["valid"]
  neg_elbo = -jnp.sum(jnp.where(valid, elbo_n, 0.0)) / jnp.sum(valid)
  return HeldOutRecord(step=step, neg_elbo=neg_elbo, bits_per_dim=bits_per_dim(
      neg_elbo, num_dims, likelihood.nats_offset_per_dim))


def _init_with_held_out(held_out, *, init, record_fn) -> VaeState:
  state = init()
  return state.replace(held_out=record_fn(state.params, state.step, held_out))


def _step_with_held_out(state, batch, held_out, *, parallel_step, record_fn, every,
                        num_steps):
  state, metrics = parallel_step(state, batch)
  due = (state.step % every == 0) | (state.step == num_steps)
  record = jax.lax.cond(due, lambda: record_fn(state.params, state.step, held_out),
                        lambda: state.held_out)
  return state.replace(held_out=record), {
      **metrics, "test_neg_elbo": record.neg_elbo,
      "test_bits_per_dim": record.bits_per_dim, "test_step": record.step}


def grid_labels(count: int, num_classes: int) -> jax.Array:
  """The labels of a grid of `count` images (ceil(sqrt(count)) per row, as
  `cnnjax.io.images.make_grid` tiles them): row r is class r mod K, so 100 images of
  10 classes give one row per class (all zeros for an unconditional VAE)."""
  side = math.ceil(math.sqrt(count))
  return (jnp.arange(count, dtype=jnp.int32) // side) % max(num_classes, 1)


def _grids(params, grid_latents_nz, reference, *, vae: ConvVae, likelihood: Likelihood,
           num_classes: int) -> dict[str, jax.Array]:
  """The sample grids of `VaeProgram.grids` (see there); `reference` may be None."""
  decode = lambda latents, labels: likelihood.mean_image(vae.apply(
      {"params": params}, latents, labels, method="decode"))
  latent_dim = grid_latents_nz.shape[-1]
  grids = {"samples": decode(grid_latents_nz, grid_labels(len(grid_latents_nz),
                                                            num_classes))}
  base_z, label, order = jnp.zeros((latent_dim,)), jnp.zeros((), jnp.int32), None
  if reference is not None:
    images, labels = reference["images"], reference["labels"]
    mean_nz, log_variance_nz = vae.apply({"params": params}, images, labels,
                                         method="encode")
    grids["reconstructions"] = jnp.stack([images, decode(mean_nz, labels)], 1).reshape(
        -1, *images.shape[1:])
    # Most used dimensions first: largest mean KL over the reference images.
    kl_z = jnp.mean(jnp.square(mean_nz) + jnp.exp(log_variance_nz) - log_variance_nz, 0)
    base_z, label, order = mean_nz[0], labels[0], jnp.argsort(-kl_z)
  side = min(latent_dim, MAX_GRID_SIDE)
  dims = jnp.arange(side) if order is None else order[:side]
  sweep = jnp.linspace(-TRAVERSAL_RANGE, TRAVERSAL_RANGE, side)
  traversal_z = jnp.tile(base_z, (side, side, 1)).at[jnp.arange(side), :, dims].set(
      base_z[dims][:, None] + sweep[None, :])
  grids["traversals"] = decode(traversal_z.reshape(-1, latent_dim),
                               jnp.full((side * side,), label))
  if num_classes > 0:
    classes = min(num_classes, MAX_GRID_SIDE)
    grids["classes"] = decode(jnp.tile(grid_latents_nz[:classes], (classes, 1)),
                              jnp.repeat(jnp.arange(classes, dtype=jnp.int32), classes))
  return grids


@dataclasses.dataclass(frozen=True)
class VaeProgram:
  """A VAE's modules and its jitted functions over `mesh`.

  Attributes:
    vae: the `ConvVae` module; likelihood: its pixel likelihood.
    conditional: whether it takes labels; num_classes: their number (0 if not).
    per_device_step: `vae_train_step` with its dependencies bound.
    init_state: `() -> VaeState`, replicated, deterministic from the seed.
    train_step: `(state, batch) -> (state, metrics)`, data-parallel, donating `state`.
    latent_dim: Z.
    grid_latents: the fixed prior latents (num_samples, Z) of every sample grid.
    reference: the fixed images (in [-1, 1]) and labels of the reconstruction grid, or
      None without held-out data.
  """
  mesh: Mesh
  vae: ConvVae
  likelihood: Likelihood
  conditional: bool
  num_classes: int
  per_device_step: Callable[..., tuple[VaeState, dict[str, jax.Array]]]
  init_state: Callable[[], VaeState]
  train_step: Callable[[VaeState, dict[str, jax.Array]],
                       tuple[VaeState, dict[str, jax.Array]]]
  latent_dim: int
  grid_latents: jax.Array
  reference: dict[str, jax.Array] | None
  decode: Callable[[Any, jax.Array, jax.Array], jax.Array]
  make_grids: Callable[..., dict[str, jax.Array]]

  def generate(self, state: VaeState, latents_nz: jax.Array,
               labels_n: jax.Array | None = None) -> jax.Array:
    """Mean images (N, H, W, C) in [-1, 1] decoded from latents; a conditional VAE's
    labels (N,) default to `grid_labels` (one class per row of the sample grid of
    `run.py sample`; ignored if unconditional)."""
    if labels_n is None:
      labels_n = grid_labels(len(latents_nz), self.num_classes)
    return self.decode(state.params, latents_nz, labels_n)

  def grids(self, state: VaeState) -> dict[str, jax.Array]:
    """`samples` from the prior; latent `traversals` (one dimension per row, swept from
    -3 to 3 around the first reference image's posterior mean, most used dimensions
    first); with held-out data, `reconstructions` (each input beside its output);
    for a conditional VAE, `classes` (one class per row, one latent per column)."""
    return self.make_grids(state.params, self.grid_latents, self.reference)


def build_vae_program(config: ml_collections.ConfigDict, *, mesh: Mesh, channels: int,
                      num_classes: int | None = None,
                      held_out: HeldOut | None = None) -> VaeProgram:
  """Builds the `VaeProgram` of a (validated) VAE config for images with `channels`.

  Args:
    config: the VAE config.
    mesh: the data mesh.
    channels: image channels.
    num_classes: the dataset's classes (None: unlabelled); used by conditional VAEs.
    held_out: images for the periodic held-out ELBO (with `eval.elbo_every` > 0) and the
      reconstruction grid; None (sampling, restoring) leaves both out.

  Raises:
    DatasetError: a conditional VAE on an unlabelled dataset.
  """
  resolution = config.data.image_size
  conditional = config.model.conditional
  if conditional and not num_classes:
    raise DatasetError(f"Dataset {config.data.name!r} has no 'label' class feature; "
                       "train the conditional VAE (model.conditional) on a labelled one.")
  num_classes = num_classes if conditional else 0
  likelihood = likelihood_from_config(config)
  vae = build_vae(config.model, resolution=resolution, channels=channels,
                  num_parameters=likelihood.num_parameters, num_classes=num_classes)
  optimizer = make_optimizer(config.optim.lr, config.optim.b1, config.optim.b2)
  init = jax.jit(functools.partial(
      init_vae_state, seed=config.seed, vae=vae, optimizer=optimizer,
      image_shape=(resolution, resolution, channels)),
      out_shardings=parallel.replicated(mesh))
  per_device_step = functools.partial(
      vae_train_step, vae=vae, optimizer=optimizer, likelihood=likelihood,
      kl_weight=functools.partial(kl_weight, beta=config.loss.beta,
                                  warmup_steps=config.loss.kl_warmup_steps),
      conditional=conditional, axis_name=parallel.DATA_AXIS)
  train_step = parallel.make_parallel_train_step(
      per_device_step, mesh=mesh, batch_size=config.train.batch_size,
      latent_dim=config.model.latent_dim, latent_stream=TRAIN_STREAM,
      skip_nonfinite=config.train.on_nonfinite == "skip")

  reference = None
  if held_out is not None:
    num_pairs = max(2, 2 * round(math.sqrt(config.train.num_samples) / 2)) ** 2 // 2
    labels = held_out.labels if held_out.labels is not None else np.zeros(
        len(held_out.images), np.int32)
    reference = parallel.put_replicated(
        {"images": scale_to_unit_range(held_out.images[:num_pairs]),
         "labels": labels[:num_pairs].astype(np.int32)}, mesh)
  if held_out is not None and config.eval.elbo_every > 0:
    shards = _shard_held_out(held_out, config.eval.elbo_num_examples, mesh)
    record_fn = functools.partial(
        _held_out_record,
        bounds_fn=make_bounds_fn(vae, likelihood, mesh, conditional=conditional,
                                 num_importance=0, chunk=1),
        key_data=jax.random.key_data(jax.random.fold_in(jax.random.key(config.seed),
                                                        HELD_OUT_STREAM)),
        num_dims=resolution * resolution * channels, likelihood=likelihood)
    init = functools.partial(jax.jit(functools.partial(
        _init_with_held_out, init=init, record_fn=record_fn),
        out_shardings=parallel.replicated(mesh)), shards)
    train_step = functools.partial(jax.jit(functools.partial(
        _step_with_held_out, parallel_step=parallel.unjitted(train_step),
        record_fn=record_fn,
        every=config.eval.elbo_every, num_steps=config.train.num_steps),
        donate_argnums=0, out_shardings=parallel.replicated(mesh),
        compiler_options=parallel.compiler_options(mesh)),
        held_out=shards)

  decode = jax.jit(lambda params, latents, labels: likelihood.mean_image(vae.apply(
      {"params": params}, latents, labels, method="decode")),
                   compiler_options=parallel.compiler_options(mesh))
  return VaeProgram(
      mesh=mesh, vae=vae, likelihood=likelihood, conditional=conditional,
      num_classes=num_classes, per_device_step=per_device_step, init_state=init,
      train_step=train_step, latent_dim=config.model.latent_dim,
      grid_latents=parallel.put_replicated(fixed_sample_latents(
          config.seed, config.train.num_samples, config.model.latent_dim), mesh),
      reference=reference, decode=decode, make_grids=jax.jit(functools.partial(
          _grids, vae=vae, likelihood=likelihood, num_classes=num_classes)))
