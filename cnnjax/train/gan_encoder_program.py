"""The GAN-inversion encoder (`configs/gan_encoder.py`): its state, its per-device step
and its program over the mesh.

The encoder E learns to invert a frozen generator G on G's own samples (Zhu et al.
2016; the in-domain encoder of Zhu et al. 2020 before its real-image stage): each step
draws z ~ N(0, I), makes x = G(z) and minimises

  latent_weight * ||E(x) - z||^2 + image_weight * ||G(E(x)) - x||^2   (means),

the gradient flowing through the frozen G into E. For a class-conditional G each
example also draws a class y uniformly, x = G(z, y), and the encoder is E(x, y) (the
class of a real image is known when it is inverted). G's variables are part of the state
(never updated), so a checkpoint holds the generator it was trained against and resume
stays exact whatever later happens to the GAN run.
"""

import dataclasses
import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct
from jax.sharding import Mesh

from cnnjax.models.latent_encoder import LatentEncoder, build_latent_encoder
from cnnjax.train import parallel
from cnnjax.train.checkpointing import validate_checkpoint_config
from cnnjax.train.divergence import NONFINITE_MODES, DivergenceRecord
from cnnjax.train.gan_program import grid_row_labels
from cnnjax.train.state import (INIT_STREAM, LABEL_STREAM, SAMPLE_STREAM, TRAIN_STREAM,
                                base_key_data)
from cnnjax.train.validation import require, require_positive

# `(generator variables, latents (B, Z), labels (B,) or None) -> images (B, H, W, C)`:
# the frozen G (labels exactly when it is class-conditional).
Generate = Callable[[Any, jax.Array, Optional[jax.Array]], jax.Array]
LABEL_KEY = "label"   # The batch entry of a conditional step's drawn classes.


@struct.dataclass
class GanEncoderState:
  """Step, base key data, the encoder's parameters and optimizer state, the frozen
  generator's variables and checkpoint step, and the record of non-finite steps."""
  step: jax.Array
  rng: jax.Array
  params: Any
  opt_state: Any
  generator: Any
  generator_step: jax.Array
  divergence: DivergenceRecord

  def step_key(self, stream: int) -> jax.Array:
    """The key of `stream` for the current step."""
    stream_key = jax.random.fold_in(jax.random.wrap_key_data(self.rng), stream)
    return jax.random.fold_in(stream_key, self.step)


def encoder_losses(params, generator_variables, latents_bz: jax.Array,
                   labels_b: Optional[jax.Array] = None, *, encoder: LatentEncoder,
                   generate: Generate, latent_weight: float, image_weight: float
                   ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The encoder's loss on G(latents[, labels]) and its two terms (batch means)."""
  images = jax.lax.stop_gradient(generate(generator_variables, latents_bz, labels_b))
  encoded_bz = encoder.apply({"params": params}, images, labels_b)
  reconstructed = generate(generator_variables, encoded_bz, labels_b)
  latent_mse = jnp.mean((encoded_bz - latents_bz) ** 2)
  image_mse = jnp.mean((reconstructed - images) ** 2)
  loss = latent_weight * latent_mse + image_weight * image_mse
  return loss, {"latent_mse": latent_mse, "image_mse": image_mse}


def encoder_train_step(state: GanEncoderState, batch: dict, latents_bz: jax.Array, *,
                       encoder: LatentEncoder, generate: Generate,
                       optimizer: optax.GradientTransformation, latent_weight: float,
                       image_weight: float, axis_name: str
                       ) -> tuple[GanEncoderState, dict[str, jax.Array]]:
  """One update on one device's latents (b, Z) (and a conditional G's drawn labels,
  `batch["label"]` (b,)); gradients averaged over `axis_name`. The encoder trains on
  the generator's samples only."""
  loss_fn = functools.partial(encoder_losses, encoder=encoder, generate=generate,
                              latent_weight=latent_weight, image_weight=image_weight)
  (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params, state.generator, latents_bz, batch.get(LABEL_KEY))
  grads = jax.lax.pmean(grads, axis_name)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  metrics = {"loss": loss, **terms, "grad_norm": optax.tree.norm(grads)}
  return (state.replace(params=optax.apply_updates(state.params, updates),
                        opt_state=opt_state),
          jax.lax.pmean(metrics, axis_name))


@dataclasses.dataclass(frozen=True)
class GanEncoderProgram:
  """The encoder, the frozen generator and their jitted functions over `mesh`.

  Attributes:
    init_state: `() -> GanEncoderState`, replicated; the generator's variables are the
      GAN run's, the encoder's initialisation is deterministic from the seed.
    train_step: `(state, batch) -> (state, metrics)`, data-parallel, donating `state`.
    encode: `(params, images (B, H, W, C), labels (B,) or None) -> latents (B, Z)`,
      pure and traceable.
    generate: `(generator variables, latents (B, Z), labels or None) -> images`.
    num_classes: the generator's classes; 0 if unconditional.
    grids: `state -> {"reconstructions": G(z) rows over G(E(G(z))) rows}`.
  """
  mesh: Mesh
  encoder: LatentEncoder
  latent_dim: int
  image_shape: tuple[int, int, int]
  init_state: Callable[[], GanEncoderState]
  train_step: Callable[[GanEncoderState, dict], tuple[GanEncoderState, dict]]
  encode: Callable[[Any, jax.Array, Optional[jax.Array]], jax.Array]
  generate: Generate
  num_classes: int
  grid_latents: jax.Array
  grid_labels: Optional[jax.Array]

  def grids(self, state: GanEncoderState) -> dict[str, jax.Array]:
    """Fixed samples G(z) (top half) above their reconstructions G(E(G(z)))."""
    return {"reconstructions": self._grid(state.params, state.generator,
                                          self.grid_latents, self.grid_labels)}

  @functools.cached_property
  def _grid(self):
    def grid(params, generator_variables, latents_nz, labels_n):
      images = self.generate(generator_variables, latents_nz, labels_n)
      encoded = self.encode(params, images, labels_n)
      return jnp.concatenate([images, self.generate(generator_variables, encoded,
                                                    labels_n)])
    return jax.jit(grid, out_shardings=parallel.replicated(self.mesh))


def _init_state(generator_variables, generator_step, *, seed: int, encoder: LatentEncoder,
                optimizer: optax.GradientTransformation,
                image_shape: tuple[int, int, int]) -> GanEncoderState:
  init_key = jax.random.fold_in(jax.random.key(seed), INIT_STREAM)
  labels = jnp.zeros((1,), jnp.int32) if encoder.num_classes else None
  params = encoder.init(init_key, jnp.zeros((1, *image_shape)), labels)["params"]
  return GanEncoderState(
      step=jnp.zeros((), jnp.int32), rng=base_key_data(seed), params=params,
      opt_state=optimizer.init(params), generator=generator_variables,
      generator_step=jnp.asarray(generator_step, jnp.int32),
      divergence=DivergenceRecord.empty())


def _draw_labels(state: GanEncoderState, *, batch_size: int, num_classes: int
                 ) -> dict[str, jax.Array]:
  """A conditional step's classes (batch_size,), uniform, at the global batch's shape."""
  return {LABEL_KEY: jax.random.randint(state.step_key(LABEL_STREAM), (batch_size,), 0,
                                        num_classes, jnp.int32)}


def build_gan_encoder_program(config: ml_collections.ConfigDict, *, mesh: Mesh,
                              generate: Generate, generator_variables: Any,
                              generator_step: int, latent_dim: int,
                              image_shape: tuple[int, int, int], num_classes: int = 0
                              ) -> GanEncoderProgram:
  """Builds the program of a (validated) `gan_encoder` config around a frozen G.

  Args:
    config: the encoder's config.
    mesh: the data mesh.
    generate: the generator's pure apply (inference mode), `(variables, z, labels)`.
    generator_variables: its variables (the state of a fresh run holds them).
    generator_step: the GAN run's checkpoint they come from (kept in the state).
    latent_dim: Z; image_shape: (H, W, C) of G's images.
    num_classes: a class-conditional G's classes (each step draws labels); 0 if not.
  """
  encoder = build_latent_encoder(config.model, latent_dim=latent_dim,
                                 num_classes=num_classes)
  schedule = optax.cosine_decay_schedule(config.optim.lr, max(config.train.num_steps, 1),
                                         alpha=0.01)
  optimizer = optax.adam(schedule, b1=config.optim.b1, b2=config.optim.b2)
  init = jax.jit(functools.partial(_init_state, seed=config.seed, encoder=encoder,
                                   optimizer=optimizer, image_shape=tuple(image_shape)),
                 out_shardings=parallel.replicated(mesh))
  per_device_step = functools.partial(
      encoder_train_step, encoder=encoder, generate=generate, optimizer=optimizer,
      latent_weight=config.loss.latent_weight, image_weight=config.loss.image_weight,
      axis_name=parallel.DATA_AXIS)
  train_step = parallel.make_parallel_train_step(
      per_device_step, mesh=mesh, batch_size=config.train.batch_size,
      latent_dim=latent_dim, latent_stream=TRAIN_STREAM,
      skip_nonfinite=config.train.on_nonfinite == "skip",
      draw_examples=functools.partial(_draw_labels, batch_size=config.train.batch_size,
                                      num_classes=num_classes) if num_classes else None)
  grid_key = jax.random.fold_in(jax.random.key(config.seed), SAMPLE_STREAM)
  return GanEncoderProgram(
      mesh=mesh, encoder=encoder, latent_dim=latent_dim, image_shape=tuple(image_shape),
      init_state=lambda: init(generator_variables, generator_step),
      train_step=train_step,
      encode=lambda params, images, labels=None: encoder.apply({"params": params}, images,
                                                               labels),
      generate=generate, num_classes=num_classes,
      grid_latents=jax.random.normal(grid_key, (config.train.num_samples, latent_dim)),
      grid_labels=grid_row_labels(config.train.num_samples, range(num_classes))
      if num_classes else None)


def validate_gan_encoder_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises `ConfigError` naming the first invalid field (the GAN run and the held-out
  split are checked when the kind opens its data, `cnnjax.runs.gan_encoder`)."""
  try:
    build_latent_encoder(config.model, latent_dim=1)
  except ValueError as error:
    require(False, str(error))
  require(config.loss.latent_weight >= 0 and config.loss.image_weight >= 0,
          "loss.latent_weight and loss.image_weight must be >= 0.")
  require(config.loss.latent_weight + config.loss.image_weight > 0,
          "loss.latent_weight and loss.image_weight are both 0: nothing to train.")
  require_positive(config.optim, "optim", ("lr",))
  require(0 <= config.optim.b1 < 1 and 0 <= config.optim.b2 < 1,
          f"optim.b1 and optim.b2 must be in [0, 1), got {config.optim.b1}, "
          f"{config.optim.b2}.")
  require_positive(config.train, "train", ("batch_size", "log_every", "sample_every",
                                           "num_samples"))
  require(config.train.num_steps >= 0,
          f"train.num_steps must be >= 0, got {config.train.num_steps}.")
  require(config.train.on_nonfinite in NONFINITE_MODES,
          f"train.on_nonfinite must be one of {', '.join(NONFINITE_MODES)}, "
          f"got {config.train.on_nonfinite!r}.")
  require(config.train.batch_size % num_devices == 0,
          f"train.batch_size={config.train.batch_size} is not divisible by the "
          f"{num_devices} devices; use a multiple of {num_devices}.")
  require_positive(config.eval, "eval", ("num_images", "batch_size"))
  require(config.eval.batch_size % num_devices == 0,
          f"eval.batch_size={config.eval.batch_size} is not divisible by the "
          f"{num_devices} devices; use a multiple of {num_devices}.")
  validate_checkpoint_config(config.checkpoint)
  require(bool(config.encoder.generator_workdir),
          "encoder.generator_workdir is required: the GAN run to invert, e.g. "
          "--config.encoder.generator_workdir=workdirs/dcgan_digits.")
  require(config.encoder.generator_step >= -1,
          f"encoder.generator_step must be a checkpoint step, or -1 for the newest, got "
          f"{config.encoder.generator_step}.")
