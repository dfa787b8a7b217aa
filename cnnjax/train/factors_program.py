"""The factor model's program (`configs/factors.py`): one supervised per-device step
(class cross-entropy plus `loss.factor_weight` times the squared error of the factor
targets, gradients averaged with `pmean`, BatchNorm synchronised), `predict` over the
mesh, and the config validator."""

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from cnnjax.data.factors import has_factors
from cnnjax.data.sources import get_data_source
from cnnjax.errors import DatasetError
from cnnjax.models.classifier import random_shift
from cnnjax.models.factors import FactorNet, build_factor_net, decode_factors, encode_factors
from cnnjax.train import parallel
from cnnjax.train.classifier_program import ClassifierState, validate_classifier_config
from cnnjax.train.divergence import DivergenceRecord
from cnnjax.train.state import INIT_STREAM, TRAIN_STREAM, PlayerState, base_key_data, init_player
from cnnjax.train.validation import require

TRAIN_FACTORS_HINT = "python run.py --config=configs/factors.py --workdir=DIR"


def factors_train_step(state: ClassifierState, batch: dict[str, jax.Array],
                       noise_b2: jax.Array, *, model: FactorNet,
                       optimizer: optax.GradientTransformation, factor_weight: float,
                       max_shift: int, axis_name: str
                       ) -> tuple[ClassifierState, dict[str, jax.Array]]:
  """One update on a shard: `image` (b, H, W, C), `label` (b,), `factors` (b, F).

  A random shift (augmentation) moves the centre, so the `x`, `y` targets move with it.
  """
  images, factors_bf = batch["image"], batch["factors"]
  if max_shift:
    images = random_shift(images, noise_b2, max_shift)
    num_shifts = 2 * max_shift + 1
    shifts_b2 = jnp.clip(jnp.floor(jax.scipy.special.ndtr(noise_b2) * num_shifts),
                         0, num_shifts - 1) - max_shift
    # random_shift crops at (shift + max_shift): content moves by -shift pixels.
    moved_b2 = -shifts_b2[:, ::-1] / images.shape[1]   # (dx, dy) as image fractions
    factors_bf = factors_bf.at[:, :2].add(moved_b2)
  targets_bt = encode_factors(factors_bf)

  def loss_fn(params):
    (logits_bk, predicted_bt), updates = model.apply(
        {"params": params, "batch_stats": state.model.batch_stats}, images, train=True,
        mutable=["batch_stats"])
    class_loss = optax.softmax_cross_entropy_with_integer_labels(
        logits_bk, batch["label"]).mean()
    factor_loss = jnp.mean(jnp.sum(jnp.square(predicted_bt - targets_bt), -1))
    loss = class_loss + factor_weight * factor_loss
    return loss, (updates["batch_stats"], logits_bk, class_loss, factor_loss)

  (loss, (batch_stats, logits_bk, class_loss, factor_loss)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.model.params)
  grads = jax.lax.pmean(grads, axis_name)
  updates, opt_state = optimizer.update(grads, state.model.opt_state, state.model.params)
  new_model = PlayerState(params=optax.apply_updates(state.model.params, updates),
                          batch_stats=batch_stats, opt_state=opt_state)
  metrics = {"loss": loss, "class_loss": class_loss, "factor_loss": factor_loss,
             "grad_norm": optax.tree.norm(grads),
             "accuracy": jnp.mean(jnp.argmax(logits_bk, -1) == batch["label"])}
  return state.replace(model=new_model), jax.lax.pmean(metrics, axis_name)


@dataclasses.dataclass(frozen=True)
class FactorsProgram:
  """A factor model and its jitted functions over `mesh`.

  Attributes:
    init_state, train_step: as the classifier's.
    predict: `(model_state, images (B, H, W, C) in [-1, 1], B sharded) -> (class
      logits (B, K), raw factors (B, F) in `FACTOR_NAMES` order)`, replicated.
  """
  mesh: Mesh
  model: FactorNet
  image_size: int
  channels: int
  init_state: Callable[[], ClassifierState]
  train_step: Callable
  predict: Callable[[PlayerState, jax.Array], tuple[jax.Array, jax.Array]]

  def grids(self, state: ClassifierState) -> dict[str, jax.Array]:
    """No sample grids: a factor model generates nothing."""
    del state
    return {}


def _init_state(*, seed, model, optimizer, image_shape) -> ClassifierState:
  init_key = jax.random.fold_in(jax.random.key(seed), INIT_STREAM)
  return ClassifierState(
      step=jnp.zeros((), jnp.int32), rng=base_key_data(seed),
      model=init_player(model, optimizer, init_key, jnp.zeros((1, *image_shape))),
      divergence=DivergenceRecord.empty())


def _predict(model_state: PlayerState, images_bhwc: jax.Array, *, model: FactorNet
             ) -> tuple[jax.Array, jax.Array]:
  logits_bk, targets_bt = model.apply(
      {"params": model_state.params, "batch_stats": model_state.batch_stats},
      images_bhwc, train=False)
  return logits_bk, decode_factors(targets_bt)


def build_factors_program(config: ml_collections.ConfigDict, *, mesh: Mesh,
                          channels: int, num_classes: int) -> FactorsProgram:
  """Builds the `FactorsProgram` of a (validated) factors config."""
  image_size = config.data.image_size
  model = build_factor_net(config.model, num_classes=num_classes,
                           axis_name=parallel.DATA_AXIS)
  warmup_steps = min(config.optim.warmup_steps, max(config.train.num_steps - 1, 0))
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, config.optim.lr, warmup_steps, max(config.train.num_steps, warmup_steps + 1),
      end_value=config.optim.lr * 0.01)
  optimizer = optax.adamw(schedule, weight_decay=config.optim.weight_decay)
  init = functools.partial(_init_state, seed=config.seed, model=model,
                           optimizer=optimizer,
                           image_shape=(image_size, image_size, channels))
  per_device_step = functools.partial(
      factors_train_step, model=model, optimizer=optimizer,
      factor_weight=config.loss.factor_weight, max_shift=config.data.max_shift,
      axis_name=parallel.DATA_AXIS)
  train_step = parallel.make_parallel_train_step(
      per_device_step, mesh=mesh, batch_size=config.train.batch_size, latent_dim=2,
      latent_stream=TRAIN_STREAM, skip_nonfinite=config.train.on_nonfinite == "skip")
  predict = jax.jit(functools.partial(_predict, model=model),
                    out_shardings=parallel.replicated(mesh),
                    compiler_options=parallel.compiler_options(mesh))
  return FactorsProgram(
      mesh=mesh, model=model, image_size=image_size, channels=channels,
      init_state=jax.jit(init, out_shardings=parallel.replicated(mesh)),
      train_step=train_step, predict=predict)


def validate_factors_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises `ConfigError`/`DatasetError` for the first invalid field of a factors config."""
  validate_classifier_config(config, num_devices)
  require(config.loss.factor_weight >= 0,
          f"loss.factor_weight must be >= 0, got {config.loss.factor_weight}.")
  _, info = get_data_source(config.data.name, config.data.test_split,
                            config.data.data_dir or None)
  if not has_factors(info):
    raise DatasetError(f"Dataset {config.data.name!r} has no ground-truth 'factors'; "
                       "train the factor model on data.name=shapes (or shapes/tiny).")
