"""The `factors` kind: a classifier-plus-regressor of `shapes`' ground-truth factors
(`configs/factors.py`), the judge of attribute edits (`cnnjax.editing.attributes`).
Once training completes, its test-split class accuracy and per-factor errors go to
`DIR/eval.json`; `load_factor_model` restores it.
"""

import os

import jax
import ml_collections
import numpy as np
from absl import logging

from cnnjax.data.factors import CIRCULAR_PERIODS, FACTOR_NAMES, load_factor_split
from cnnjax.data.pipeline import make_train_dataset
from cnnjax.data.pipeline import scale_to_unit_range
from cnnjax.errors import CheckpointError, ConfigError, WorkdirError
from cnnjax.io.metrics_writer import MetricsWriter
from cnnjax.io.workdir import EVAL_FILE, write_json_atomic
from cnnjax.runs.kind import ExperimentKind
from cnnjax.runs.restore import open_as
from cnnjax.train import parallel
from cnnjax.train.factors_program import (TRAIN_FACTORS_HINT, FactorsProgram,
                                          build_factors_program, validate_factors_config)
from cnnjax.train.loop import TrainData


def _open_data(config: ml_collections.ConfigDict) -> TrainData:
  data = load_factor_split(config.data.name, config.data.split, config.data.data_dir,
                           config.data.image_size, config.data.resize)
  return TrainData(source=data, info={
      "name": config.data.name, "split": config.data.split,
      "image_shape": list(data.images.shape[1:]),
      "num_classes": int(data.labels.max()) + 1 if len(data) else 0,
      "factor_names": list(FACTOR_NAMES)})


def _make_batches(config: ml_collections.ConfigDict, data: TrainData, *,
                  process_index: int, process_count: int):
  return iter(make_train_dataset(
      data.source, seed=config.seed, global_batch_size=config.train.batch_size,
      image_size=config.data.image_size, resize=config.data.resize, has_label=True,
      process_index=process_index, process_count=process_count,
      num_threads=config.data.num_threads, prefetch=config.data.prefetch,
      keep=("factors",)))


def _build_program(config: ml_collections.ConfigDict, *, mesh, data_info: dict):
  return build_factors_program(config, mesh=mesh, channels=data_info["image_shape"][-1],
                               num_classes=data_info["num_classes"])


def factor_errors(predicted_nf: np.ndarray, true_nf: np.ndarray) -> dict[str, float]:
  """Mean absolute error of each factor (circular ones along the shorter arc)."""
  errors = {}
  for index, name in enumerate(FACTOR_NAMES):
    difference_n = predicted_nf[:, index] - true_nf[:, index]
    if name in CIRCULAR_PERIODS:
      period = CIRCULAR_PERIODS[name]
      difference_n = (difference_n + period / 2) % period - period / 2
    errors[f"{name}_mae"] = float(np.mean(np.abs(difference_n)))
  return errors


class FactorModel:
  """A restored factor model: class logits and raw factors of any number of images.

  Attributes:
    image_shape: (H, W, C) it was trained on.
    num_classes: classes of its dataset.
    step: the checkpoint's step.
    workdir: its run directory.
  """

  def __init__(self, program: FactorsProgram, model_state, *, batch_size: int, step: int,
               workdir: str):
    self._program, self._model_state = program, model_state
    self.image_shape = (program.image_size, program.image_size, program.channels)
    self.num_classes = program.model.trunk.num_classes
    self.batch_size = -(-batch_size // program.mesh.size) * program.mesh.size
    self.step, self.workdir = step, workdir

  def predict(self, images_nhwc) -> tuple[np.ndarray, np.ndarray]:
    """(class logits (N, K), factors (N, F) in `FACTOR_NAMES` order) of images
    (N, H, W, C) float in [-1, 1] or uint8, at the model's shape."""
    if tuple(np.shape(images_nhwc)[1:]) != self.image_shape:
      raise ConfigError(f"The factor model in {self.workdir} takes {self.image_shape} "
                        f"images, got {tuple(np.shape(images_nhwc)[1:])}.")
    sharding = parallel.data_sharded(self._program.mesh)
    logits, factors = [], []
    for start in range(0, len(images_nhwc), self.batch_size):
      chunk = np.asarray(images_nhwc[start:start + self.batch_size])
      if chunk.dtype == np.uint8:
        chunk = scale_to_unit_range(chunk)
      valid = len(chunk)
      chunk = np.pad(chunk.astype(np.float32),
                     ((0, self.batch_size - valid),) + ((0, 0),) * 3)
      logits_bk, factors_bf = jax.device_get(self._program.predict(
          self._model_state, jax.device_put(chunk, sharding)))
      logits.append(logits_bk[:valid])
      factors.append(factors_bf[:valid])
    if not logits:
      return (np.zeros((0, self.num_classes), np.float32),
              np.zeros((0, len(FACTOR_NAMES)), np.float32))
    return np.concatenate(logits), np.concatenate(factors)


def load_factor_model(workdir: str, *, step: int | None = None,
                      batch_size: int | None = None) -> FactorModel:
  """Restores the factor model trained in `workdir` (read-only; newest step by default).

  Raises:
    WorkdirError, CheckpointError: no trained factor model there (says how to train one).
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  try:
    run = open_as(workdir, KIND, step)
  except WorkdirError:
    raise WorkdirError(f"{workdir} holds no trained factor model; train one with "
                       f"`{TRAIN_FACTORS_HINT}`.") from None
  except ConfigError as error:
    raise WorkdirError(str(error)) from None
  except CheckpointError:
    if step is not None:
      raise
    raise CheckpointError(f"The factor model in {workdir} has no checkpoint yet; finish "
                          f"training it with `{TRAIN_FACTORS_HINT}`.") from None
  return FactorModel(run.program, run.state.model,
                     batch_size=batch_size or run.config.train.eval_batch_size,
                     step=run.step, workdir=workdir)


def test_metrics(model: FactorModel, data_config: ml_collections.ConfigDict,
                 split: str) -> dict[str, float]:
  """Class accuracy and each factor's mean absolute error on a split."""
  data = load_factor_split(data_config.name, split, data_config.data_dir,
                           data_config.image_size, data_config.resize)
  logits_nk, factors_nf = model.predict(data.images)
  return {"accuracy": float(np.mean(np.argmax(logits_nk, -1) == data.labels)),
          **factor_errors(factors_nf, data.factors), "num_examples": len(data)}


def _score_test_split(config: ml_collections.ConfigDict, workdir: str,
                      logged: dict[str, float]) -> dict[str, float]:
  """Once training is complete, scores the test split into `workdir/eval.json`."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  model = load_factor_model(workdir, batch_size=config.train.eval_batch_size)
  if model.step < config.train.num_steps:  # Preempted: evaluate when the run completes.
    return logged
  metrics = {f"test_{name}": value for name, value in
             test_metrics(model, config.data, config.data.test_split).items()}
  logging.info("Factor model at step %d: %s", model.step,
               ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
  if jax.process_index() == 0:
    if logged:
      writer = MetricsWriter(workdir, resume_step=model.step)
      writer.write_scalars(model.step, metrics)
      writer.close()
    write_json_atomic(os.path.join(workdir, EVAL_FILE), {
        "step": model.step, "metrics": metrics,
        "settings": {"dataset": config.data.name, "split": config.data.test_split,
                     "image_size": config.data.image_size,
                     "factor_names": list(FACTOR_NAMES)}})
  return {**logged, **metrics}


KIND = ExperimentKind(
    name="factors",
    summary="a shapes factor model (class and x, y, scale, rotation, hue); test errors "
            "in its eval.json",
    config_hint=TRAIN_FACTORS_HINT,
    validate=validate_factors_config,
    build_program=_build_program,
    open_data=_open_data,
    make_batches=_make_batches,
    after_training=_score_test_split,
)
