"""Style transfer by optimising pixels (Gatys, Ecker & Bethge 2016).

The image x minimises

  content_weight * content(F_c(x), F_c(content)) + style_weight * sum_l w_l *
  Gram-MSE(F_l(x), F_l(style)) + tv_weight * tv(x)

(`cnnjax.losses.style`), with F the feature network (`cnnjax.models.style_features`). With
`features.normalize="content"` every layer's activations (of x, of the content and of
the style image alike) are divided by their mean magnitude on the content image, so the
weights mean the same for every layer and network.

The image stays in range by construction: the optimised variable is unconstrained,
u, and x = tanh(u) in (-1, 1) (no clipping, which would break L-BFGS's line search). The
content init is u = arctanh(INIT_CONTRAST * content): INIT_CONTRAST < 1 keeps pure black
and white pixels off tanh's flat tails, where they could not move; the noise init is
u ~ 0.5 N(0, 1), drawn from jax.random.fold_in(fold_in(PRNGKey(seed), NOISE_STREAM),
image index).

Optimisers: optax's L-BFGS with its zoom line search, or Adam, for `steps` steps, the
whole loop (`lax.scan`) in one jitted program. Images are optimised independently: vmap
over the images of a device, `jax.shard_map` over a 1-D mesh of every device (images
padded to a multiple of the device count by repeating the last one). Each image's result
is a deterministic function of the seed, the config and its images.

L-BFGS reuses the value and gradient its line search computed at the accepted point, as
`optax.value_and_grad_from_state` does; that helper's `lax.cond` fallback (for a
non-finite cached value, i.e. before the first step) becomes a `select` under vmap, which
computes a fresh gradient every step. So the state is seeded with the true value and
gradient of the starting point, and the cached ones are read with `optax.tree.get`: one
line search per step and nothing more (the loss terms of the curves cost one forward).
Measured: 30 steps of 4 vmapped 64x64 images on a 2-core CPU took 19.8 s this way and
26.0 s through `optax.value_and_grad_from_state`, to the same losses.
"""

import dataclasses
import functools
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from cnnjax.errors import ConfigError
from cnnjax.losses import style as style_losses
from cnnjax.models.style_features import FeatureNetwork
from cnnjax.train.parallel import DATA_AXIS, compiler_options, make_data_mesh

OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise")
INIT_CONTRAST = 0.95
NOISE_STREAM = 1     # fold_in stream of the noise inits (the network's weights use 0).
TERMS = style_losses.TERMS


@dataclasses.dataclass(frozen=True)
class GatysSettings:
  """Everything of a config that the optimisation reads (hashable: a jit static)."""
  loss: style_losses.PerceptualSettings
  optimizer: str
  steps: int
  learning_rate: float
  init: str


def settings_from_config(config: ml_collections.ConfigDict) -> GatysSettings:
  """The optimisation's settings; `ConfigError` for an unknown optimiser or init."""
  if config.optimizer.name not in OPTIMIZERS:
    raise ConfigError(f"Unknown optimizer.name {config.optimizer.name!r}: use one of "
                      f"{', '.join(OPTIMIZERS)}.")
  if config.init not in INITS:
    raise ConfigError(f"Unknown init {config.init!r}: use one of {', '.join(INITS)}.")
  if config.optimizer.steps < 1:
    raise ConfigError(f"optimizer.steps must be >= 1, got {config.optimizer.steps}.")
  if not config.optimizer.learning_rate > 0:
    raise ConfigError("optimizer.learning_rate must be > 0, got "
                      f"{config.optimizer.learning_rate}.")
  return GatysSettings(
      loss=style_losses.perceptual_settings(config), optimizer=config.optimizer.name,
      steps=int(config.optimizer.steps),
      learning_rate=float(config.optimizer.learning_rate), init=config.init)


def _terms(u_hwc: jax.Array, targets: dict, *, features_fn: Callable,
           settings: GatysSettings) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(total loss, {term: value}) of one image's variable u (image = tanh(u));
  `targets` are its `perceptual_targets` (a batch of one)."""
  parts = style_losses.perceptual_terms(features_fn, settings.loss,
                                        jnp.tanh(u_hwc)[None], targets)
  parts = {name: value[0] for name, value in parts.items()}
  return parts["total"], parts


def _optimize_one(u0: jax.Array, targets: dict, *, features_fn: Callable,
                  settings: GatysSettings) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Runs the optimiser on one image: (final u, {term: (steps + 1,) curve})."""
  terms = functools.partial(_terms, targets=targets, features_fn=features_fn,
                            settings=settings)
  value_fn = lambda u: terms(u)[0]
  if settings.optimizer == "adam":
    optimizer = optax.adam(settings.learning_rate)
    state = optimizer.init(u0)

    def step(carry, _):
      u, state = carry
      (_, parts), grad = jax.value_and_grad(terms, has_aux=True)(u)
      updates, state = optimizer.update(grad, state, u)
      return (optax.apply_updates(u, updates), state), parts
  else:
    optimizer = optax.lbfgs()
    value, grad = jax.value_and_grad(value_fn)(u0)
    state = optax.tree.set(optimizer.init(u0), value=value, grad=grad)

    def step(carry, _):
      u, state = carry
      parts = terms(u)[1]
      value, grad = optax.tree.get(state, "value"), optax.tree.get(state, "grad")
      updates, state = optimizer.update(grad, state, u, value=value, grad=grad,
                                        value_fn=value_fn)
      return (optax.apply_updates(u, updates), state), parts

  (u, _), curves = jax.lax.scan(step, (u0, state), None, length=settings.steps)
  final = terms(u)[1]
  return u, {name: jnp.append(curves[name], final[name]) for name in TERMS}


def _per_device(variables, contents, style, indices, noise_key, *, module,
                settings: GatysSettings):
  """One device's share: (images (n, H, W, 3), {term: (n, steps + 1)})."""
  features_fn = functools.partial(module.apply, variables)
  grams = style_losses.style_grams(features_fn, style, settings.loss)
  targets = jax.vmap(lambda content: style_losses.perceptual_targets(
      features_fn, settings.loss, content[None], grams))(contents)
  if settings.init == "content":
    u0 = jnp.arctanh(INIT_CONTRAST * jnp.clip(contents, -1.0, 1.0))
  else:
    u0 = jax.vmap(lambda i: 0.5 * jax.random.normal(jax.random.fold_in(noise_key, i),
                                                    contents.shape[1:]))(indices)
  optimize = functools.partial(_optimize_one, features_fn=features_fn, settings=settings)
  u, curves = jax.vmap(optimize)(u0, targets)
  return jnp.tanh(u), curves


@dataclasses.dataclass(frozen=True)
class StylizeResult:
  """Stylised images and their loss curves.

  Attributes:
    images: (N, H, W, 3) float32 in [-1, 1].
    curves: term ("content", "style", "tv", "total") -> (N, steps + 1): the loss at each
      iterate, the starting point first and the returned image last.
    compile_seconds: tracing and compiling the program (0 if compiled before).
    run_seconds: running it (all images, every device).
  """
  images: np.ndarray
  curves: dict[str, np.ndarray]
  compile_seconds: float
  run_seconds: float


_COMPILED: dict = {}   # Compiled programs by module, settings, mesh and argument shapes.
_MAX_COMPILED = 8


def _compiled(module, settings: GatysSettings, mesh,
              args: tuple) -> tuple[Callable, float]:
  """The compiled program for `args` (compiled once per process), and the seconds its
  compilation took now (0 when it was compiled before)."""
  leaves, treedef = jax.tree.flatten(args)
  key = (module, settings, mesh, treedef,
         tuple((np.shape(leaf), str(getattr(leaf, "dtype", type(leaf))))
               for leaf in leaves))
  if key in _COMPILED:
    return _COMPILED[key], 0.0
  start = time.perf_counter()
  per_device = functools.partial(_per_device, module=module, settings=settings)
  mapped = jax.shard_map(per_device, mesh=mesh,
                         in_specs=(P(), P(DATA_AXIS), P(), P(DATA_AXIS), P()),
                         out_specs=(P(DATA_AXIS), P(DATA_AXIS)), check_vma=False)
  program = jax.jit(mapped, compiler_options=compiler_options(mesh))
  if len(_COMPILED) >= _MAX_COMPILED:
    _COMPILED.clear()
  _COMPILED[key] = program.lower(*args).compile()
  return _COMPILED[key], time.perf_counter() - start


def stylize(network: FeatureNetwork, settings: GatysSettings, contents: np.ndarray,
            style: np.ndarray, *, seed: int, devices: list[jax.Device] | None = None
            ) -> StylizeResult:
  """Stylises every content image with `style`, on all devices at once.

  Args:
    network: the feature network (`cnnjax.models.style_features.build_feature_network`).
    settings: see `settings_from_config`.
    contents: (N, H, W, 3) images in [-1, 1].
    style: (H', W', 3) image in [-1, 1] (any size; its Gram matrices are size-free).
    seed: the config's seed (of the noise init).
    devices: the mesh's devices (default: all).

  Returns:
    A `StylizeResult`.
  """
  mesh = make_data_mesh(devices)
  contents = np.asarray(contents, np.float32)
  num = contents.shape[0]
  padded = -(-num // mesh.size) * mesh.size
  contents = np.concatenate([contents, np.repeat(contents[-1:], padded - num, axis=0)])
  indices = np.arange(padded, dtype=np.int32)
  noise_key = jax.random.fold_in(jax.random.PRNGKey(seed), NOISE_STREAM)
  args = (network.variables, contents, np.asarray(style, np.float32), indices, noise_key)
  compiled, compile_seconds = _compiled(network.module, settings, mesh, args)
  start = time.perf_counter()
  images, curves = jax.block_until_ready(compiled(*args))
  run_seconds = time.perf_counter() - start
  return StylizeResult(
      images=np.asarray(images)[:num],
      curves={name: np.asarray(value)[:num] for name, value in curves.items()},
      compile_seconds=compile_seconds, run_seconds=run_seconds)
