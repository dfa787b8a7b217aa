"""CycleGAN (Zhu et al. 2017): the per-device step, the program over a mesh and the
config validator.

Four networks: `g_ab` (G: A -> B) and `g_ba` (F: B -> A), ResNet generators, and the
PatchGANs `d_a` (real A against F(b)) and `d_b` (real B against G(a)). One step, in the
reference implementation's order: jitter each domain's images (their own keys); update
both generators against the discriminators' current parameters on

  L_GAN(G) + L_GAN(F) + lambda_a |F(G(a)) - a| + lambda_b |G(F(b)) - b|
    + lambda_identity (lambda_b |G(b) - b| + lambda_a |F(a) - a|);

then each discriminator on real images and on what its history pool
(`cnnjax.train.image_pool`) hands out for the step's fakes, its loss halved. The pools
see the global batch: every device gathers the fakes of all devices, runs the same query
(the same key, the same order) and keeps its own slice, so the pools and every number
are the same on 1 and 8 devices (up to the reduction order of the gradient means).
"""

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from cnnjax.augment.paired_jitter import jitter_batch
from cnnjax.errors import ConfigError
from cnnjax.losses.translation import mean_abs_error, patch_gan_loss
from cnnjax.models.translation import PatchGAN, ResnetGenerator
from cnnjax.train import parallel
from cnnjax.train.divergence import DivergenceRecord
from cnnjax.train.image_pool import empty_pool, query_pool
from cnnjax.train.pix2pix_program import validate_translation_common
from cnnjax.train.state import (INIT_STREAM, NOISE_STREAM, TRAIN_STREAM, PlayerState,
                                base_key_data, init_player)
from cnnjax.train.translation_state import (JITTER_KEYS, POOL_KEYS, TranslationState,
                                            adam_with_linear_decay, draw_noise_keys,
                                            make_translator, triptychs)
from cnnjax.train.validation import require, require_positive

CYCLEGAN_HINT = "python run.py --config=configs/cyclegan.py --workdir=DIR"
JITTER_B_KEYS = 3   # A sub-stream of NOISE_STREAM beside translation_state's.
DIRECTIONS = ("a_to_b", "b_to_a")
GENERATOR_OF = {"a_to_b": "g_ab", "b_to_a": "g_ba"}
PLAYERS = ("g_ab", "g_ba", "d_a", "d_b")


@dataclasses.dataclass(frozen=True)
class CycleGanNetworks:
  """The four networks (the generators differ only in their output channels)."""
  g_ab: ResnetGenerator
  g_ba: ResnetGenerator
  d_a: PatchGAN
  d_b: PatchGAN


def build_networks(config: ml_collections.ConfigDict, a_channels: int, b_channels: int
                   ) -> CycleGanNetworks:
  model = config.model
  generator = functools.partial(ResnetGenerator, base_width=model.g_width,
                                num_blocks=model.g_num_blocks)
  discriminator = functools.partial(PatchGAN, base_width=model.d_width,
                                    num_layers=model.d_num_layers,
                                    max_width=model.d_max_width)
  return CycleGanNetworks(g_ab=generator(out_channels=b_channels),
                          g_ba=generator(out_channels=a_channels),
                          d_a=discriminator(), d_b=discriminator())


def _d_output(logits: jax.Array, loss: str) -> jax.Array:
  return jnp.mean(jax.nn.sigmoid(logits) if loss == "vanilla" else logits)


def _global_query(pool, fakes_bhwc: jax.Array, key: jax.Array, axis_name: str):
  """The pool's answer for this device's fakes, the query run on the global batch."""
  local = fakes_bhwc.shape[0]
  everyone = jax.lax.all_gather(fakes_bhwc, axis_name, tiled=True)
  pool, shown = query_pool(pool, everyone, key)
  start = jax.lax.axis_index(axis_name) * local
  return pool, jax.lax.dynamic_slice_in_dim(shown, start, local)


def cyclegan_train_step(state: TranslationState, batch: dict[str, jax.Array],
                        latents: jax.Array, *, networks: CycleGanNetworks,
                        optimizers: dict[str, optax.GradientTransformation],
                        config: ml_collections.ConfigDict, axis_name: str
                        ) -> tuple[TranslationState, dict[str, jax.Array]]:
  """One CycleGAN update on one device's shard (`a`, `b`, per-example jitter keys)."""
  del latents
  loss_name, weights = config.loss.gan, config.loss
  a, b = batch["a"], batch["b"]
  if config.data.jitter:
    jitter = functools.partial(jitter_batch, load_size=config.data.load_size,
                               flip=config.data.flip)
    a, = jitter(jax.random.wrap_key_data(batch[f"keys{JITTER_KEYS}"]), (a,))
    b, = jitter(jax.random.wrap_key_data(batch[f"keys{JITTER_B_KEYS}"]), (b,))
  players = state.players
  apply = lambda name, params, x: getattr(networks, name).apply(
      {"params": params}, x, train=True)
  d_params = {name: players[name].params for name in ("d_a", "d_b")}

  def g_objective(g_params):
    fake_b, fake_a = apply("g_ab", g_params["g_ab"], a), apply("g_ba", g_params["g_ba"], b)
    terms = {
        "g_gan_ab": patch_gan_loss(apply("d_b", d_params["d_b"], fake_b), True, loss_name),
        "g_gan_ba": patch_gan_loss(apply("d_a", d_params["d_a"], fake_a), True, loss_name),
        "cycle_a": mean_abs_error(apply("g_ba", g_params["g_ba"], fake_b), a),
        "cycle_b": mean_abs_error(apply("g_ab", g_params["g_ab"], fake_a), b)}
    loss = (terms["g_gan_ab"] + terms["g_gan_ba"] + weights.lambda_a * terms["cycle_a"]
            + weights.lambda_b * terms["cycle_b"])
    if weights.lambda_identity > 0:
      terms["identity_b"] = mean_abs_error(apply("g_ab", g_params["g_ab"], b), b)
      terms["identity_a"] = mean_abs_error(apply("g_ba", g_params["g_ba"], a), a)
      loss += weights.lambda_identity * (weights.lambda_b * terms["identity_b"]
                                         + weights.lambda_a * terms["identity_a"])
    return loss, (terms, fake_a, fake_b)

  g_params = {name: players[name].params for name in ("g_ab", "g_ba")}
  (g_loss, (terms, fake_a, fake_b)), g_grads = jax.value_and_grad(
      g_objective, has_aux=True)(g_params)
  g_grads = jax.lax.pmean(g_grads, axis_name)

  pool_key = jax.random.fold_in(state.step_key(NOISE_STREAM), POOL_KEYS)
  pool_b, shown_b = _global_query(state.pool["fake_b"], jax.lax.stop_gradient(fake_b),
                                  jax.random.fold_in(pool_key, 0), axis_name)
  pool_a, shown_a = _global_query(state.pool["fake_a"], jax.lax.stop_gradient(fake_a),
                                  jax.random.fold_in(pool_key, 1), axis_name)

  def d_objective(params):
    outputs = {}
    for name, real, fake in (("d_a", a, shown_a), ("d_b", b, shown_b)):
      real_logits, fake_logits = apply(name, params[name], real), apply(name, params[name], fake)
      outputs[f"{name}_loss"] = 0.5 * (patch_gan_loss(real_logits, True, loss_name)
                                       + patch_gan_loss(fake_logits, False, loss_name))
      outputs[f"{name}_real"] = _d_output(real_logits, loss_name)
      outputs[f"{name}_fake"] = _d_output(fake_logits, loss_name)
    return outputs["d_a_loss"] + outputs["d_b_loss"], outputs

  (_, d_metrics), d_grads = jax.value_and_grad(d_objective, has_aux=True)(d_params)
  d_grads = jax.lax.pmean(d_grads, axis_name)

  new_players = {}
  for name, grads in (*g_grads.items(), *d_grads.items()):
    player = players[name]
    updates, opt_state = optimizers[name].update(grads, player.opt_state, player.params)
    new_players[name] = PlayerState(params=optax.apply_updates(player.params, updates),
                                    batch_stats={}, opt_state=opt_state)
  metrics = {"g_loss": g_loss, **terms, **d_metrics,
             "g_grad_norm": optax.tree.norm(g_grads),
             "d_grad_norm": optax.tree.norm(d_grads)}
  return (state.replace(players=new_players, pool={"fake_a": pool_a, "fake_b": pool_b}),
          jax.lax.pmean(metrics, axis_name))


@dataclasses.dataclass(frozen=True)
class CycleGanProgram:
  """A CycleGAN run's networks and jitted functions over `mesh`.

  Attributes:
    init_state: `() -> TranslationState`, deterministic from the seed.
    train_step: `(state, batch) -> (state, metrics)`, data-parallel, donating `state`.
    translators: per direction (`a_to_b`, `b_to_a`), `(generator params, images
      (N, H, W, C), seed) -> translations` (numpy).
    grid_a, grid_b: the fixed test images of the training grids (or None).
  """
  mesh: Mesh
  networks: CycleGanNetworks
  image_size: int
  a_channels: int
  b_channels: int
  init_state: Callable[[], TranslationState]
  train_step: Callable[..., tuple[TranslationState, dict[str, jax.Array]]]
  translators: dict[str, Callable[..., np.ndarray]]
  grid_a: np.ndarray | None = None
  grid_b: np.ndarray | None = None

  @property
  def source_channels(self) -> int:
    """Channels of A -> B's input (`run.py translate`'s default direction)."""
    return self.a_channels

  def input_channels(self, direction: str) -> int:
    return self.a_channels if direction == "a_to_b" else self.b_channels

  def translate_state(self, state: TranslationState, images: np.ndarray, seed: int = 0,
                      direction: str = "a_to_b") -> np.ndarray:
    """`images` of the direction's source domain, translated (N, H, W, C) in [-1, 1]."""
    generator = GENERATOR_OF[direction]
    return self.translators[direction](state.players[generator].params, images, seed)

  def round_trip(self, state: TranslationState, images: np.ndarray,
                 direction: str = "a_to_b") -> tuple[np.ndarray, np.ndarray]:
    """(translations, translations translated back): G(a), F(G(a)) for `a_to_b`."""
    back = DIRECTIONS[1 - DIRECTIONS.index(direction)]
    outputs = self.translate_state(state, images, direction=direction)
    return outputs, self.translate_state(state, outputs, direction=back)

  def grids(self, state: TranslationState) -> dict[str, np.ndarray]:
    """`a_to_b`: A | G(A) | F(G(A)); `b_to_a`: B | F(B) | G(F(B)), fixed test images."""
    grids = {}
    for direction, images in (("a_to_b", self.grid_a), ("b_to_a", self.grid_b)):
      if images is not None:
        grids[direction] = triptychs(images, *self.round_trip(state, images, direction))
    return grids


def _init_state(*, seed, networks, optimizers, image_size, a_channels, b_channels,
                pool_size) -> TranslationState:
  keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), INIT_STREAM),
                          len(PLAYERS))
  a = jnp.zeros((1, image_size, image_size, a_channels))
  b = jnp.zeros((1, image_size, image_size, b_channels))
  inputs = {"g_ab": a, "g_ba": b, "d_a": a, "d_b": b}
  return TranslationState(
      step=jnp.zeros((), jnp.int32), rng=base_key_data(seed),
      players={name: init_player(getattr(networks, name), optimizers[name], key,
                                 inputs[name]) for name, key in zip(PLAYERS, keys)},
      pool={"fake_a": empty_pool(pool_size, (image_size, image_size, a_channels)),
            "fake_b": empty_pool(pool_size, (image_size, image_size, b_channels))},
      divergence=DivergenceRecord.empty())


def build_cyclegan_program(config: ml_collections.ConfigDict, *, mesh: Mesh,
                           a_channels: int, b_channels: int,
                           grid_images: tuple[np.ndarray, np.ndarray] | None = None
                           ) -> CycleGanProgram:
  """The program of a (validated) CycleGAN config.

  Raises:
    ConfigError: the identity loss is on but the domains' channels differ.
  """
  if config.loss.lambda_identity > 0 and a_channels != b_channels:
    raise ConfigError(f"loss.lambda_identity={config.loss.lambda_identity} needs domains "
                      f"with equal channels, but A has {a_channels} and B {b_channels}; "
                      "set loss.lambda_identity=0.")
  networks = build_networks(config, a_channels, b_channels)
  optimizers = {name: adam_with_linear_decay(config.optim) for name in PLAYERS}
  batch_size = config.train.batch_size
  init = functools.partial(
      _init_state, seed=config.seed, networks=networks, optimizers=optimizers,
      image_size=config.data.image_size, a_channels=a_channels, b_channels=b_channels,
      pool_size=config.model.pool_size)
  per_device = functools.partial(cyclegan_train_step, networks=networks,
                                 optimizers=optimizers, config=config,
                                 axis_name=parallel.DATA_AXIS)
  train_step = parallel.make_parallel_train_step(
      per_device, mesh=mesh, batch_size=batch_size, latent_dim=1,
      latent_stream=TRAIN_STREAM, skip_nonfinite=config.train.on_nonfinite == "skip",
      draw_examples=functools.partial(draw_noise_keys, batch_size=batch_size,
                                      streams=(JITTER_KEYS, JITTER_B_KEYS)))
  translators = {direction: make_translator(
      getattr(networks, GENERATOR_OF[direction]), mesh=mesh, dropout=False,
      batch_size=config.eval.batch_size) for direction in DIRECTIONS}
  grid_a, grid_b = grid_images if grid_images is not None else (None, None)
  return CycleGanProgram(
      mesh=mesh, networks=networks, image_size=config.data.image_size,
      a_channels=a_channels, b_channels=b_channels,
      init_state=jax.jit(init, out_shardings=parallel.replicated(mesh)),
      train_step=train_step, translators=translators, grid_a=grid_a, grid_b=grid_b)


def validate_cyclegan_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises `ConfigError` naming the first invalid field of a CycleGAN config."""
  validate_translation_common(config, num_devices)
  size = config.data.image_size
  require(size >= 8, f"data.image_size={size} is too small for the ResNet generator's "
          "two downsamplings; use 8 or more.")
  for domain in ("domain_a", "domain_b"):
    for name in ("name", "feature", "split", "test_split"):
      require(bool(config.data[domain][name]),
              f"data.{domain}.{name} must name a dataset {name}, got ''.")
  model = config.model
  require_positive(model, "model", ("g_width", "d_width", "d_max_width", "d_num_layers"))
  require(model.g_num_blocks >= 0,
          f"model.g_num_blocks must be >= 0, got {model.g_num_blocks}.")
  require(model.pool_size >= 0, f"model.pool_size must be >= 0 (0: no history pool), "
          f"got {model.pool_size}.")
  if size >> model.d_num_layers < 4:
    raise ConfigError(f"model.d_num_layers={model.d_num_layers} downsamples {size}-pixel "
                      "images below 4 pixels; use fewer layers or larger images.")
  for name in ("lambda_a", "lambda_b", "lambda_identity"):
    require(config.loss[name] >= 0, f"loss.{name} must be >= 0, got {config.loss[name]}.")
