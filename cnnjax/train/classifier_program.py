"""The in-domain classifier (`configs/classifier.py`): its state, its supervised
per-device step (gradients averaged with `pmean`, BatchNorm synchronised over the mesh),
its program over the mesh (`predict` gives the logits and penultimate features that the
sample-quality metrics use) and its config validator."""

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from cnnjax.data.pipeline import RESIZE_MODES
from cnnjax.data.sources import dataset_num_classes, get_data_source
from cnnjax.errors import DatasetError
from cnnjax.models.classifier import Classifier, build_classifier, random_shift
from cnnjax.train import parallel
from cnnjax.train.checkpointing import validate_checkpoint_config
from cnnjax.train.divergence import DivergenceRecord
from cnnjax.train.state import (INIT_STREAM, TRAIN_STREAM, PlayerState, SingleNetworkState,
                                base_key_data, init_player)
from cnnjax.train.validation import (require, require_divisible, require_positive,
                                     require_train_loop)

TRAIN_CLASSIFIER_HINT = ("python run.py --config=configs/classifier.py:digits "
                         "--workdir=DIR")


# The classifier's state: step, base key data, the network and the non-finite record.
ClassifierState = SingleNetworkState


def classifier_train_step(state: ClassifierState, batch: dict[str, jax.Array],
                          noise_b2: jax.Array, *, model: Classifier,
                          optimizer: optax.GradientTransformation, max_shift: int,
                          axis_name: str) -> tuple[ClassifierState, dict[str, jax.Array]]:
  """One cross-entropy update on one device's shard (`image` (b, H, W, C), `label` (b,)).

  Returns:
    The new state and scalar metrics averaged over `axis_name`.
  """
  images = random_shift(batch["image"], noise_b2, max_shift) if max_shift else batch["image"]

  def loss_fn(params):
    (logits_bk, _), updates = model.apply(
        {"params": params, "batch_stats": state.model.batch_stats}, images, train=True,
        mutable=["batch_stats"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits_bk, batch["label"])
    return loss.mean(), (updates["batch_stats"], logits_bk)

  (loss, (batch_stats, logits_bk)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.model.params)
  grads = jax.lax.pmean(grads, axis_name)
  updates, opt_state = optimizer.update(grads, state.model.opt_state, state.model.params)
  new_model = PlayerState(params=optax.apply_updates(state.model.params, updates),
                          batch_stats=batch_stats, opt_state=opt_state)
  metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
             "accuracy": jnp.mean(jnp.argmax(logits_bk, -1) == batch["label"])}
  return state.replace(model=new_model), jax.lax.pmean(metrics, axis_name)


@dataclasses.dataclass(frozen=True)
class ClassifierProgram:
  """A classifier's module and its jitted functions over `mesh`.

  Attributes:
    init_state: `() -> ClassifierState`, replicated, deterministic from the seed.
    train_step: `(state, batch) -> (state, metrics)`, data-parallel, donating `state`.
    predict: `(model_state, images (B, h, w, C) in [-1, 1], B sharded over the mesh)
      -> (logits (B, K), features (B, D))`, replicated; images are resized to
      `image_size` first when their size differs.
  """
  mesh: Mesh
  model: Classifier
  image_size: int
  channels: int
  init_state: Callable[[], ClassifierState]
  train_step: Callable[[ClassifierState, dict[str, jax.Array]],
                       tuple[ClassifierState, dict[str, jax.Array]]]
  predict: Callable[[PlayerState, jax.Array], tuple[jax.Array, jax.Array]]

  def grids(self, state: ClassifierState) -> dict[str, jax.Array]:
    """No sample grids: a classifier generates nothing."""
    del state
    return {}


def _init_state(*, seed: int, model: Classifier, optimizer: optax.GradientTransformation,
                image_shape: tuple[int, int, int]) -> ClassifierState:
  init_key = jax.random.fold_in(jax.random.key(seed), INIT_STREAM)
  return ClassifierState(
      step=jnp.zeros((), jnp.int32), rng=base_key_data(seed),
      model=init_player(model, optimizer, init_key, jnp.zeros((1, *image_shape))),
      divergence=DivergenceRecord.empty())


def _predict(model_state: PlayerState, images_bhwc: jax.Array, *, model: Classifier,
             image_size: int) -> tuple[jax.Array, jax.Array]:
  batch, height, width, channels = images_bhwc.shape
  if (height, width) != (image_size, image_size):
    images_bhwc = jax.image.resize(images_bhwc, (batch, image_size, image_size, channels),
                                   "bilinear")
  return model.apply({"params": model_state.params,
                      "batch_stats": model_state.batch_stats}, images_bhwc, train=False)


def build_classifier_program(config: ml_collections.ConfigDict, *, mesh: Mesh,
                             channels: int, num_classes: int | None) -> ClassifierProgram:
  """Builds the `ClassifierProgram` of a (validated) classifier config."""
  if num_classes is None:
    raise DatasetError(f"Dataset {config.data.name!r} has no 'label' class feature; "
                       "train the classifier on a labelled dataset.")
  image_size = config.data.image_size
  model = build_classifier(config.model, num_classes=num_classes,
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
      classifier_train_step, model=model, optimizer=optimizer,
      max_shift=config.data.max_shift, axis_name=parallel.DATA_AXIS)
  train_step = parallel.make_parallel_train_step(
      per_device_step, mesh=mesh, batch_size=config.train.batch_size, latent_dim=2,
      latent_stream=TRAIN_STREAM, skip_nonfinite=config.train.on_nonfinite == "skip")
  predict = jax.jit(functools.partial(_predict, model=model, image_size=image_size),
                    out_shardings=parallel.replicated(mesh),
                    compiler_options=parallel.compiler_options(mesh))
  return ClassifierProgram(
      mesh=mesh, model=model, image_size=image_size, channels=channels,
      init_state=jax.jit(init, out_shardings=parallel.replicated(mesh)),
      train_step=train_step, predict=predict)


def validate_classifier_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises `ConfigError` naming the first invalid field of a classifier config."""
  build_classifier(config.model, num_classes=1, axis_name=None)  # Checks the model.
  require(config.data.resize in RESIZE_MODES,
           f"data.resize must be one of {', '.join(RESIZE_MODES)}, got {config.data.resize!r}.")
  require_positive(config.data, "data", ("image_size", "num_threads", "prefetch"))
  require(0 <= config.data.max_shift < config.data.image_size,
           f"data.max_shift must be in [0, data.image_size), got {config.data.max_shift}.")
  require_positive(config.optim, "optim", ("lr",))
  require(config.optim.warmup_steps >= 0 and config.optim.weight_decay >= 0,
           "optim.warmup_steps and optim.weight_decay must be >= 0.")
  require_train_loop(config.train,
                     ("batch_size", "log_every", "sample_every", "eval_batch_size"))
  validate_checkpoint_config(config.checkpoint)
  _, info = get_data_source(config.data.name, config.data.test_split,
                            config.data.data_dir or None)
  if dataset_num_classes(info) is None:
    raise DatasetError(f"Dataset {config.data.name!r} has no 'label' class feature; "
                       "train the classifier on a labelled dataset.")
  require_divisible(config.train, ("batch_size", "eval_batch_size"), num_devices)
