"""Fast style transfer (Johnson et al. 2016): the perceptual loss, the per-device step,
the program over a mesh and the config validator.

One step: mirror each content image left-right with probability 1/2 (if `data.flip`;
the flips are drawn at global batch shape from the state's NOISE_STREAM key of the step,
so 1 and 8 devices see the same ones), stylise the batch with the transformer, and take
an Adam step on the mean over images of

  content_weight * content + style_weight * style + tv_weight * tv

(`cnnjax.losses.style.perceptual_terms`, the loss `cnnjax.style.gatys` minimises too, so
both methods' losses are on one scale), measured by a fixed feature network (random or
VGG19: `cnnjax.models.style_features`, built by the caller and passed in). Gradients are averaged over the device axis.

The feature network's variables are an argument of the jitted step (bound by
`functools.partial`), not constants of the program; the style image, a few kilobytes, is
one.
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from cnnjax.data.pipeline import RESIZE_MODES
from cnnjax.losses import style as style_losses
from cnnjax.models.style_transformer import MIN_SIZE, StyleTransformer
from cnnjax.train import parallel
from cnnjax.train.checkpointing import validate_checkpoint_config
from cnnjax.train.divergence import DivergenceRecord
from cnnjax.train.state import (INIT_STREAM, NOISE_STREAM, PlayerState, SingleNetworkState,
                                base_key_data, init_player)
from cnnjax.train.translation_state import triptychs
from cnnjax.train.validation import (require, require_adam_betas, require_divisible,
                                     require_positive, require_train_loop)

FAST_STYLE_HINT = "python run.py --config=configs/fast_style.py --workdir=DIR"


# The run's state: step, base key data, the transformer (`model`) and the non-finite record.
FastStyleState = SingleNetworkState


def fast_style_train_step(state: FastStyleState, batch: dict[str, jax.Array],
                          feature_variables: Any, *, transformer: StyleTransformer,
                          optimizer: optax.GradientTransformation, feature_module: nn.Module,
                          style_image: np.ndarray,
                          settings: style_losses.PerceptualSettings,
                          axis_name: str) -> tuple[FastStyleState, dict[str, jax.Array]]:
  """One Adam update on one device's shard: `image` (b, H, W, 3), `flip` (b,) bool."""
  contents = jnp.where(batch["flip"][:, None, None, None], batch["image"][:, :, ::-1],
                       batch["image"])
  features_fn = functools.partial(feature_module.apply, feature_variables)
  grams = style_losses.style_grams(features_fn, jnp.asarray(style_image), settings)
  targets = style_losses.perceptual_targets(features_fn, settings, contents, grams)

  def loss_fn(params):
    outputs = transformer.apply({"params": params}, contents)
    terms = style_losses.perceptual_terms(features_fn, settings, outputs, targets)
    return jnp.mean(terms["total"]), terms

  (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.model.params)
  grads = jax.lax.pmean(grads, axis_name)
  updates, opt_state = optimizer.update(grads, state.model.opt_state, state.model.params)
  model_state = PlayerState(params=optax.apply_updates(state.model.params, updates),
                            batch_stats={}, opt_state=opt_state)
  metrics = {"loss": loss, **{name: jnp.mean(terms[name]) for name in ("content", "style",
                                                                        "tv")},
             "grad_norm": optax.tree.norm(grads)}
  return state.replace(model=model_state), jax.lax.pmean(metrics, axis_name)


def _global_step(state: FastStyleState, batch: dict[str, jax.Array], feature_variables,
                 *, sharded_step: Callable, mesh: Mesh, batch_size: int, flip: bool,
                 skip_nonfinite: bool) -> tuple[FastStyleState, dict[str, jax.Array]]:
  """The whole mesh's step: flips drawn at global shape, divergence recorded."""
  flips = (jax.random.bernoulli(state.step_key(NOISE_STREAM), 0.5, (batch_size,))
           if flip else jnp.zeros((batch_size,), bool))
  batch = jax.lax.with_sharding_constraint({**batch, "flip": flips},
                                           NamedSharding(mesh, P(parallel.DATA_AXIS)))
  new_state, metrics = sharded_step(state, batch, feature_variables)
  divergence, finite = state.divergence.update(state.step + 1, metrics)
  if skip_nonfinite:
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
  return new_state.replace(step=state.step + 1, divergence=divergence), metrics


def _init_state(*, seed: int, transformer: StyleTransformer,
                optimizer: optax.GradientTransformation, image_size: int) -> FastStyleState:
  key = jax.random.fold_in(jax.random.key(seed), INIT_STREAM)
  return FastStyleState(
      step=jnp.zeros((), jnp.int32), rng=base_key_data(seed),
      model=init_player(transformer, optimizer, key,
                              jnp.zeros((1, image_size, image_size, 3), jnp.float32)),
      divergence=DivergenceRecord.empty())


def _apply(params, images_bhwc, *, transformer: StyleTransformer) -> jax.Array:
  return transformer.apply({"params": params}, images_bhwc)


def _terms(feature_variables, outputs_bhwc, contents_bhwc, style_hwc, *,
           feature_module: nn.Module, settings: style_losses.PerceptualSettings
           ) -> dict[str, jax.Array]:
  features_fn = functools.partial(feature_module.apply, feature_variables)
  grams = style_losses.style_grams(features_fn, style_hwc, settings)
  targets = style_losses.perceptual_targets(features_fn, settings, contents_bhwc, grams)
  return style_losses.perceptual_terms(features_fn, settings, outputs_bhwc, targets)


@dataclasses.dataclass(frozen=True)
class FastStyleProgram:
  """A fast-style run's networks and jitted functions.

  Attributes:
    init_state: `() -> FastStyleState`, replicated, deterministic from the seed.
    train_step: `(state, batch) -> (state, metrics)`, data-parallel, donating `state`.
    apply: jitted `(params, images (B, H, W, 3)) -> stylised images`, any size >=
      `MIN_SIZE`, on one device (`single_device`).
    terms: jitted `(feature variables, outputs, contents, style image) -> {term: (B,)}`.
    grid_contents: the fixed test images of the training grids (or None).
  """
  mesh: Mesh
  transformer: StyleTransformer
  feature_module: nn.Module
  feature_variables: Any
  style_image: np.ndarray
  settings: style_losses.PerceptualSettings
  image_size: int
  init_state: Callable[[], FastStyleState]
  train_step: Callable[..., tuple[FastStyleState, dict[str, jax.Array]]]
  apply: Any
  terms: Any
  grid_contents: np.ndarray | None = None

  @property
  def single_device(self) -> jax.Device:
    """Where `apply` and `terms` run: one device, so nothing is computed twice."""
    return self.mesh.devices.flat[0]

  def params_on_device(self, state: FastStyleState) -> Any:
    return jax.device_put(state.model.params, self.single_device)

  def stylize(self, state: FastStyleState, contents_bhwc: np.ndarray) -> np.ndarray:
    """The stylised images of `contents_bhwc` in [-1, 1] (numpy)."""
    images = jax.device_put(np.asarray(contents_bhwc, np.float32), self.single_device)
    return np.asarray(self.apply(self.params_on_device(state), images))

  def loss_terms(self, outputs_bhwc: np.ndarray, contents_bhwc: np.ndarray
                 ) -> dict[str, np.ndarray]:
    """{term: (B,)} of stylised images against their contents and the run's style."""
    device = self.single_device
    args = jax.device_put((self.feature_variables, np.asarray(outputs_bhwc, np.float32),
                           np.asarray(contents_bhwc, np.float32), self.style_image),
                          device)
    return {name: np.asarray(value) for name, value in self.terms(*args).items()}

  def grids(self, state: FastStyleState) -> dict[str, np.ndarray]:
    """`stylized`: content | stylised, one row per fixed test image."""
    if self.grid_contents is None:
      return {}
    return {"stylized": triptychs(self.grid_contents,
                                  self.stylize(state, self.grid_contents))}


def build_fast_style_program(config: ml_collections.ConfigDict, *, mesh: Mesh,
                             feature_module: nn.Module, feature_variables: Any,
                             style_image: np.ndarray,
                             grid_contents: np.ndarray | None = None) -> FastStyleProgram:
  """The program of a (validated) fast-style config.

  Args:
    config: a configs/fast_style.py config.
    mesh: the data mesh.
    feature_module, feature_variables: the loss network
      (`cnnjax.models.style_features.build_feature_network`).
    style_image: (H, W, 3) float32 in [-1, 1].
    grid_contents: (N, H, W, 3) test images in [-1, 1] of the sample grids, or None.
  """
  model = config.model
  transformer = StyleTransformer(widths=tuple(model.widths),
                                 num_residual_blocks=model.num_residual_blocks,
                                 outer_kernel=model.outer_kernel)
  optimizer = optax.adam(config.optim.lr, b1=config.optim.b1, b2=config.optim.b2)
  settings = style_losses.perceptual_settings(config)
  style_image = np.asarray(style_image, np.float32)
  per_device = functools.partial(
      fast_style_train_step, transformer=transformer, optimizer=optimizer,
      feature_module=feature_module, style_image=style_image, settings=settings,
      axis_name=parallel.DATA_AXIS)
  # check_vma=False: pmap's semantics (see cnnjax.train.parallel).
  sharded_step = jax.shard_map(per_device, mesh=mesh,
                               in_specs=(P(), P(parallel.DATA_AXIS), P()),
                               out_specs=(P(), P()), check_vma=False)
  step = jax.jit(functools.partial(
      _global_step, sharded_step=sharded_step, mesh=mesh,
      batch_size=config.train.batch_size, flip=bool(config.data.flip),
      skip_nonfinite=config.train.on_nonfinite == "skip"),
      donate_argnums=0, out_shardings=(parallel.replicated(mesh),) * 2,
      compiler_options=parallel.compiler_options(mesh))
  init = functools.partial(_init_state, seed=config.seed, transformer=transformer,
                           optimizer=optimizer, image_size=config.data.image_size)
  options = parallel.compiler_options(mesh)
  return FastStyleProgram(
      mesh=mesh, transformer=transformer, feature_module=feature_module,
      feature_variables=feature_variables, style_image=style_image, settings=settings,
      image_size=config.data.image_size,
      init_state=jax.jit(init, out_shardings=parallel.replicated(mesh)),
      train_step=functools.partial(
          step, feature_variables=parallel.put_replicated(feature_variables, mesh)),
      apply=jax.jit(functools.partial(_apply, transformer=transformer),
                    compiler_options=options),
      terms=jax.jit(functools.partial(_terms, feature_module=feature_module,
                                      settings=settings), compiler_options=options),
      grid_contents=grid_contents)


def validate_fast_style_config(config: ml_collections.ConfigDict, num_devices: int
                               ) -> None:
  """Raises `ConfigError` naming the first invalid field of a fast-style config (the
  feature network's fields and the style image are checked by the kind, which can
  build them)."""
  data, model = config.data, config.model
  require(data.image_size >= MIN_SIZE,
          f"data.image_size must be >= {MIN_SIZE}, got {data.image_size}.")
  require(data.resize in RESIZE_MODES,
          f"data.resize must be one of {', '.join(RESIZE_MODES)}, got {data.resize!r}.")
  require_positive(data, "data", ("num_threads", "prefetch"))
  require(config.style_size >= MIN_SIZE,
          f"style_size must be >= {MIN_SIZE}, got {config.style_size}.")
  widths = tuple(model.widths)
  require(len(widths) >= 1 and all(isinstance(w, int) and w > 0 for w in widths),
          f"model.widths must be positive channel counts, got {widths}.")
  require(model.num_residual_blocks >= 0,
          f"model.num_residual_blocks must be >= 0, got {model.num_residual_blocks}.")
  require(model.outer_kernel > 0 and model.outer_kernel % 2 == 1,
          f"model.outer_kernel must be a positive odd size, got {model.outer_kernel}.")
  require(data.image_size >> (len(widths) - 1) >= 2,
          f"model.widths={widths} downsamples data.image_size={data.image_size} below "
          "2 pixels; use fewer widths or larger images.")
  require_positive(config.optim, "optim", ("lr",))
  require_adam_betas(config.optim)
  require_train_loop(config.train)
  validate_checkpoint_config(config.checkpoint)
  require_positive(config.eval, "eval", ("num_grid",))
  require_divisible(config.train, ("batch_size",), num_devices)
