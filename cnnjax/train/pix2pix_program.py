"""pix2pix (Isola et al. 2017): the per-device step, the program over a mesh and the
config validator.

One step: jitter each (source, target) pair identically; translate the sources with the
U-Net (its dropout the only noise, one key per example); update the PatchGAN on real
(source, target) and fake (source, G(source)) pairs; then the generator through the
updated discriminator: `lambda_gan * L_GAN + lambda_l1 * L1`, from the same forward pass
(its VJP). Gradients are averaged over the device axis; every random number is drawn at
global batch shape, so 1 and 8 devices give the same numbers.
"""

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from cnnjax.augment.paired_jitter import jitter_batch
from cnnjax.data.pipeline import RESIZE_MODES
from cnnjax.errors import ConfigError
from cnnjax.losses.translation import GAN_LOSSES, mean_abs_error, patch_gan_loss
from cnnjax.models.translation import PatchGAN, UNetGenerator, unet_widths
from cnnjax.train import parallel
from cnnjax.train.checkpointing import validate_checkpoint_config
from cnnjax.train.divergence import DivergenceRecord
from cnnjax.train.state import INIT_STREAM, TRAIN_STREAM, PlayerState, base_key_data, init_player
from cnnjax.train.translation_state import (DROPOUT_KEYS, JITTER_KEYS, TranslationState,
                                            adam_with_linear_decay, apply_per_example,
                                            draw_noise_keys, make_translator, triptychs)
from cnnjax.train.validation import (require, require_adam_betas, require_divisible,
                                     require_positive, require_train_loop)

PIX2PIX_HINT = "python run.py --config=configs/pix2pix.py --workdir=DIR"


def build_networks(config: ml_collections.ConfigDict, out_channels: int
                   ) -> tuple[UNetGenerator, PatchGAN]:
  model = config.model
  generator = UNetGenerator(
      widths=unet_widths(config.data.image_size, model.g_width, model.g_max_width),
      out_channels=out_channels, dropout_rate=model.dropout_rate,
      num_dropout=model.num_dropout)
  discriminator = PatchGAN(base_width=model.d_width, num_layers=model.d_num_layers,
                           max_width=model.d_max_width)
  return generator, discriminator


def _d_output(logits: jax.Array, loss: str) -> jax.Array:
  return jnp.mean(jax.nn.sigmoid(logits) if loss == "vanilla" else logits)


def pix2pix_train_step(state: TranslationState, batch: dict[str, jax.Array],
                       latents: jax.Array, *, generator: UNetGenerator,
                       discriminator: PatchGAN, g_optimizer, d_optimizer,
                       config: ml_collections.ConfigDict, axis_name: str
                       ) -> tuple[TranslationState, dict[str, jax.Array]]:
  """One pix2pix update on one device's shard (`source`, `target`, per-example keys)."""
  del latents
  loss_name, weights = config.loss.gan, config.loss
  jitter_keys = jax.random.wrap_key_data(batch[f"keys{JITTER_KEYS}"])
  dropout_keys = jax.random.wrap_key_data(batch[f"keys{DROPOUT_KEYS}"])
  source, target = batch["source"], batch["target"]
  if config.data.jitter:
    source, target = jitter_batch(jitter_keys, (source, target),
                                  load_size=config.data.load_size, flip=config.data.flip)
  g_state, d_state = state.players["generator"], state.players["discriminator"]
  fake, g_vjp = jax.vjp(lambda params: apply_per_example(
      generator, params, source, dropout_keys, dropout=config.model.dropout_rate > 0),
                        g_state.params)

  def d_apply(params, output):
    return discriminator.apply({"params": params}, jnp.concatenate([source, output], -1),
                               train=True)

  def d_loss_fn(params):
    real_logits = d_apply(params, target)
    fake_logits = d_apply(params, jax.lax.stop_gradient(fake))
    loss = 0.5 * (patch_gan_loss(real_logits, True, loss_name)
                  + patch_gan_loss(fake_logits, False, loss_name))
    return loss, (_d_output(real_logits, loss_name), _d_output(fake_logits, loss_name))

  (d_loss, (d_real, d_fake)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
      d_state.params)
  d_grads = jax.lax.pmean(d_grads, axis_name)
  d_updates, d_opt = d_optimizer.update(d_grads, d_state.opt_state, d_state.params)
  d_params = optax.apply_updates(d_state.params, d_updates)

  def g_objective(output):
    gan = patch_gan_loss(d_apply(d_params, output), True, loss_name)
    l1 = mean_abs_error(output, target)
    return weights.lambda_gan * gan + weights.lambda_l1 * l1, (gan, l1)

  (g_loss, (g_gan, g_l1)), fake_grad = jax.value_and_grad(g_objective, has_aux=True)(fake)
  g_grads = jax.lax.pmean(g_vjp(fake_grad)[0], axis_name)
  g_updates, g_opt = g_optimizer.update(g_grads, g_state.opt_state, g_state.params)
  players = {
      "generator": PlayerState(params=optax.apply_updates(g_state.params, g_updates),
                               batch_stats={}, opt_state=g_opt),
      "discriminator": PlayerState(params=d_params, batch_stats={}, opt_state=d_opt)}
  metrics = {"d_loss": d_loss, "g_loss": g_loss, "g_gan": g_gan, "g_l1": g_l1,
             "d_real": d_real, "d_fake": d_fake,
             "g_grad_norm": optax.tree.norm(g_grads),
             "d_grad_norm": optax.tree.norm(d_grads)}
  return state.replace(players=players), jax.lax.pmean(metrics, axis_name)


@dataclasses.dataclass(frozen=True)
class Pix2pixProgram:
  """A pix2pix run's networks and jitted functions over `mesh`.

  Attributes:
    init_state: `() -> TranslationState`, deterministic from the seed.
    train_step: `(state, batch) -> (state, metrics)`, data-parallel, donating `state`.
    translate: `(generator params, sources (N, H, W, C), seed) -> outputs` (numpy), with
      the decoder's dropout on when `model.dropout_at_test`.
    grid_sources, grid_targets: the fixed test pairs of the training grids (or None).
  """
  mesh: Mesh
  generator: UNetGenerator
  discriminator: PatchGAN
  image_size: int
  source_channels: int
  target_channels: int
  init_state: Callable[[], TranslationState]
  train_step: Callable[..., tuple[TranslationState, dict[str, jax.Array]]]
  translate: Callable[..., np.ndarray]
  grid_sources: np.ndarray | None = None
  grid_targets: np.ndarray | None = None

  def translate_state(self, state: TranslationState, sources: np.ndarray,
                      seed: int = 0) -> np.ndarray:
    return self.translate(state.players["generator"].params, sources, seed)

  def grids(self, state: TranslationState) -> dict[str, np.ndarray]:
    """`translations`: input | output | target of the fixed test pairs."""
    if self.grid_sources is None:
      return {}
    outputs = self.translate_state(state, self.grid_sources)
    return {"translations": triptychs(self.grid_sources, outputs, self.grid_targets)}


def _init_state(*, seed, generator, discriminator, g_optimizer, d_optimizer, image_size,
                source_channels, target_channels) -> TranslationState:
  g_key, d_key = jax.random.split(jax.random.fold_in(jax.random.key(seed), INIT_STREAM))
  source = jnp.zeros((1, image_size, image_size, source_channels))
  pair = jnp.zeros((1, image_size, image_size, source_channels + target_channels))
  return TranslationState(
      step=jnp.zeros((), jnp.int32), rng=base_key_data(seed),
      players={"generator": init_player(generator, g_optimizer, g_key, source),
               "discriminator": init_player(discriminator, d_optimizer, d_key, pair)},
      pool={}, divergence=DivergenceRecord.empty())


def build_pix2pix_program(config: ml_collections.ConfigDict, *, mesh: Mesh,
                          source_channels: int, target_channels: int,
                          grid_pairs: tuple[np.ndarray, np.ndarray] | None = None
                          ) -> Pix2pixProgram:
  """The program of a (validated) pix2pix config."""
  generator, discriminator = build_networks(config, target_channels)
  g_optimizer = adam_with_linear_decay(config.optim)
  d_optimizer = adam_with_linear_decay(config.optim)
  init = functools.partial(
      _init_state, seed=config.seed, generator=generator, discriminator=discriminator,
      g_optimizer=g_optimizer, d_optimizer=d_optimizer, image_size=config.data.image_size,
      source_channels=source_channels, target_channels=target_channels)
  per_device = functools.partial(
      pix2pix_train_step, generator=generator, discriminator=discriminator,
      g_optimizer=g_optimizer, d_optimizer=d_optimizer, config=config,
      axis_name=parallel.DATA_AXIS)
  train_step = parallel.make_parallel_train_step(
      per_device, mesh=mesh, batch_size=config.train.batch_size, latent_dim=1,
      latent_stream=TRAIN_STREAM, skip_nonfinite=config.train.on_nonfinite == "skip",
      draw_examples=functools.partial(draw_noise_keys, batch_size=config.train.batch_size,
                                      streams=(JITTER_KEYS, DROPOUT_KEYS)))
  translate = make_translator(generator, mesh=mesh, dropout=(
      config.model.dropout_at_test and config.model.dropout_rate > 0),
                              batch_size=config.eval.batch_size)
  grid_sources, grid_targets = grid_pairs if grid_pairs is not None else (None, None)
  return Pix2pixProgram(
      mesh=mesh, generator=generator, discriminator=discriminator,
      image_size=config.data.image_size, source_channels=source_channels,
      target_channels=target_channels,
      init_state=jax.jit(init, out_shardings=parallel.replicated(mesh)),
      train_step=train_step, translate=translate, grid_sources=grid_sources,
      grid_targets=grid_targets)


def validate_translation_common(config: ml_collections.ConfigDict, num_devices: int
                                ) -> None:
  """Checks shared by pix2pix and CycleGAN configs (data, optim, train, checkpoint)."""
  size = config.data.image_size
  require(size >= 4 and size & (size - 1) == 0,
          f"data.image_size must be a power of two >= 4, got {size}.")
  require(config.data.resize in RESIZE_MODES,
          f"data.resize must be one of {', '.join(RESIZE_MODES)}, got {config.data.resize!r}.")
  require(config.data.load_size >= size,
          f"data.load_size={config.data.load_size} must be >= data.image_size={size}.")
  require_positive(config.data, "data", ("num_threads", "prefetch"))
  require_positive(config.optim, "optim", ("lr",))
  require_adam_betas(config.optim)
  require(config.optim.constant_steps >= 0 and config.optim.decay_steps >= 0,
          "optim.constant_steps and optim.decay_steps must be >= 0.")
  require(config.loss.gan in GAN_LOSSES,
          f"loss.gan must be one of {', '.join(GAN_LOSSES)}, got {config.loss.gan!r}.")
  require_train_loop(config.train)
  validate_checkpoint_config(config.checkpoint)
  require_positive(config.eval, "eval", ("batch_size", "num_grid"))
  require(config.eval.every >= 0 and config.eval.num_examples >= 0,
          "eval.every and eval.num_examples must be >= 0.")
  require_divisible(config.train, ("batch_size",), num_devices)


def validate_pix2pix_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises `ConfigError` naming the first invalid field of a pix2pix config."""
  validate_translation_common(config, num_devices)
  model = config.model
  require_positive(model, "model", ("g_width", "g_max_width", "d_width", "d_max_width",
                                    "d_num_layers"))
  require(0.0 <= model.dropout_rate < 1.0,
          f"model.dropout_rate must be in [0, 1), got {model.dropout_rate}.")
  require(model.num_dropout >= 0, f"model.num_dropout must be >= 0, got {model.num_dropout}.")
  if config.data.image_size >> model.d_num_layers < 4:
    raise ConfigError(f"model.d_num_layers={model.d_num_layers} downsamples "
                      f"{config.data.image_size}-pixel images below 4 pixels; use fewer "
                      "layers or larger images.")
  for name in ("lambda_gan", "lambda_l1"):
    require(config.loss[name] >= 0, f"loss.{name} must be >= 0, got {config.loss[name]}.")
