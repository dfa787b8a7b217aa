"""The training runtime shared by every experiment kind: inputs checked, state restored,
the loop, its outputs.

A kind (`cnnjax.runs.kind.ExperimentKind`) supplies a config validator and a program
builder, and may replace the data hooks (`open_image_data`, `image_batches`: one image
dataset with optional labels). The program has `init_state()`, a jitted
`train_step(state, batch) -> (state, metrics)` whose state has `step` and `divergence`
fields, and `grids(state) -> {name: images (N, H, W, C)}` for the sample grids. It may
also supply an evaluator factory: metrics computed every `eval.every` steps and at the
last step, logged with the losses and available to keep the best checkpoint
(`checkpoint.best_metric`). A run resumes from its work directory's newest complete
checkpoint when relaunched with the same command; SIGTERM/SIGINT checkpoint the current
step and end the run with status 0.
"""

import contextlib
import dataclasses
import json
import os
import sys
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from absl import logging

from cnnjax.data.pipeline import make_train_dataset
from cnnjax.data.sources import dataset_image_shape, dataset_num_classes, get_data_source
from cnnjax.errors import ConfigError, NonFiniteError
from cnnjax.io.images import make_grid, save_png
from cnnjax.io.metrics_writer import MetricsWriter
from cnnjax.io.provenance import write_provenance
from cnnjax.io.workdir import (CONFIG_FILE, DATA_INFO_FILE, prepare_workdir, read_json,
                               write_json_atomic)
from cnnjax.io.workdir_lock import workdir_lock
from cnnjax.io.write_errors import reporting_write_errors
from cnnjax.train import parallel
from cnnjax.train.best_metric import check_best_metric, check_evaluated, step_metric_names
from cnnjax.train.checkpointing import Checkpointer
from cnnjax.train.divergence import all_finite
from cnnjax.train.preemption import PreemptionSignal
from cnnjax.train.progress import Progress
from cnnjax.train.resume import check_resumable

CONFIG_CHANGES_FILE = "config_changes.jsonl"

# `(config) -> evaluate(program, state) -> metrics`, or None when the config asks for none.
EvaluatorFactory = Callable[[ml_collections.ConfigDict],
                            Callable[[Any, Any], dict[str, float]] | None]


@dataclasses.dataclass(frozen=True)
class TrainData:
  """What a run trains on, opened before anything is written.

  Attributes:
    source: the random-access source(s) its batch iterator reads (None: the program
      makes its own inputs, e.g. from latents).
    info: JSON description written to `DIR/data_info.json` and given to the program
      builder: at least `name`, `split`, `image_shape` [H, W, C], `num_classes`
      (None when unlabelled); kinds may add their own fields.
  """
  source: Any
  info: dict[str, Any]


# `(config) -> TrainData`, and `(config, data, process_index=, process_count=) ->
# a checkpointable grain iterator of host batches, or None (each step's batch is then
# an empty dict: the program makes its own inputs)`.
OpenData = Callable[[ml_collections.ConfigDict], TrainData]
MakeBatches = Callable[..., Any]
_all_finite = jax.jit(all_finite)


def _fetch(tree):
  """Every device-to-host read of the loop goes through here (and so is countable)."""
  return jax.device_get(tree)


def _check_dataset_fits(config: ml_collections.ConfigDict, height: int, width: int) -> None:
  if config.data.resize == "pad" and max(height, width) > config.data.image_size:
    raise ConfigError(
        f"{config.data.name} images are {height}x{width}, larger than "
        f"data.image_size={config.data.image_size}; set data.resize='resize' or a "
        "larger data.image_size.")


def open_image_data(config: ml_collections.ConfigDict) -> TrainData:
  """The default data hook: the `data.name` dataset's `data.split`, images (and labels).

  Raises:
    DatasetError: the dataset or split is unavailable.
    ConfigError: its images do not fit `data.image_size` with `data.resize='pad'`.
  """
  source, info = get_data_source(config.data.name, config.data.split,
                                 config.data.data_dir or None)
  height, width, channels = dataset_image_shape(info)
  _check_dataset_fits(config, height, width)
  return TrainData(source=source, info={
      "name": config.data.name, "split": config.data.split,
      "image_shape": [height, width, channels], "num_classes": dataset_num_classes(info)})


def image_batches(config: ml_collections.ConfigDict, data: TrainData, *,
                  process_index: int, process_count: int):
  """The default batch hook: this process's slice of seeded, shuffled global batches of
  `image` (and `label`) scaled to [-1, 1] (`cnnjax.data.pipeline.make_train_dataset`)."""
  return iter(make_train_dataset(
      data.source, seed=config.seed, global_batch_size=config.train.batch_size,
      image_size=config.data.image_size, resize=config.data.resize,
      has_label=data.info["num_classes"] is not None, process_index=process_index,
      process_count=process_count, num_threads=config.data.num_threads,
      prefetch=config.data.prefetch, cache_in_memory=config.data.cache_in_memory))


def _record_config(workdir: str, config_dict: dict, is_writer: bool) -> None:
  """Checks a relaunch against the workdir's config, then (re)writes config.json."""
  config_path = os.path.join(workdir, CONFIG_FILE)
  changes = {}
  if os.path.exists(config_path):
    changes = check_resumable(read_json(config_path), config_dict, workdir)
  if not is_writer:
    return
  if changes:
    with open(os.path.join(workdir, CONFIG_CHANGES_FILE), "a") as file:
      file.write(json.dumps({path: {"previous": old, "current": new}
                             for path, (old, new) in changes.items()}) + "\n")
  write_json_atomic(config_path, config_dict)


def _guard_finite(state, metric_names: list[str], check_parameters: bool) -> None:
  """Raises `NonFiniteError` if the run diverged (called before every checkpoint)."""
  divergence = _fetch(state.divergence)
  if divergence.first_step >= 0:
    raise NonFiniteError(
        f"Training diverged: {divergence.describe(metric_names)}; the last good "
        "checkpoint is kept. Lower the learning rates, change the loss, or set "
        "train.on_nonfinite=skip.")
  if check_parameters and not _fetch(_all_finite(state)):
    raise NonFiniteError(
        f"Training diverged: a parameter is not finite at step "
        f"{_fetch(state.step)}; the last good checkpoint is kept.")


def write_grids(workdir: str, step: int, grids: dict[str, np.ndarray],
                 writer: MetricsWriter) -> None:
  """Saves each named batch of images as `DIR/<name>/grid_<step>.png` and to TensorBoard."""
  for name, images in grids.items():
    grid = make_grid(np.asarray(images))
    directory = os.path.join(workdir, name)
    with reporting_write_errors(f"the sample grid {name}/grid_{step:06d}.png"):
      os.makedirs(directory, exist_ok=True)
      save_png(os.path.join(directory, f"grid_{step:06d}.png"), grid)
    writer.write_image(step, name, grid)


def run_training(config: ml_collections.ConfigDict, workdir: str, *,
                 validate: Callable[[ml_collections.ConfigDict, int], None],
                 build_program: Callable[..., Any],
                 make_evaluator: EvaluatorFactory | None = None,
                 open_data: OpenData = open_image_data,
                 make_batches: MakeBatches = image_batches) -> dict[str, float]:
  """Trains (or resumes) the experiment of `config` in `workdir`.

  Every input is checked before anything in `workdir` is written. From the start,
  SIGTERM/SIGINT make the run checkpoint its current step and return.

  Args:
    config: the experiment config (sections data, train, checkpoint; seed).
    workdir: the run's directory.
    validate: `(config, num_devices)` raising `ConfigError` for a bad config.
    build_program: `(config, mesh=, data_info=) -> program`, `data_info` being
      `TrainData.info`.
    make_evaluator: builds the periodic evaluation from the config (after `validate`,
      before the workdir is touched, so that a missing extractor fails early); it
      returns None when `eval.every` is 0.
    open_data: opens the training data (checked before the workdir is touched).
    make_batches: this process's checkpointable iterator of host batches, or None.

  Returns:
    The metrics of the last logged step (empty if no step ran).
  """
  with PreemptionSignal() as preemption, contextlib.ExitStack() as held:
    return _train(config, workdir, preemption, validate, build_program, make_evaluator,
                  open_data, make_batches, held)


def _train(config, workdir, preemption, validate, build_program, make_evaluator,
           open_data, make_batches, held: contextlib.ExitStack) -> dict[str, float]:
  mesh = parallel.make_data_mesh()
  validate(config, mesh.size)
  data = open_data(config)
  evaluate = make_evaluator(config) if make_evaluator is not None else None
  eval_every = config.eval.every if evaluate is not None else 0
  # Built before the workdir is touched: a config the program rejects writes nothing.
  program = build_program(config, mesh=mesh, data_info=data.info)
  step_names = None
  if config.checkpoint.best_metric:   # Traced on a throwaway iterator's first batch.
    probe = make_batches(config, data, process_index=jax.process_index(),
                         process_count=jax.process_count())
    step_names = step_metric_names(program, None if probe is None else next(probe))
    check_best_metric(config, step_names, evaluates=bool(eval_every))
  is_writer = jax.process_index() == 0
  workdir = prepare_workdir(workdir)
  # One writer per workdir (one lock per run: process 0's), held until training ends.
  held.enter_context(workdir_lock(workdir, enabled=is_writer))
  with reporting_write_errors(f"the run's config and provenance in {workdir}"):
    _record_config(workdir, json.loads(config.to_json()), is_writer)
    if is_writer:
      write_provenance(workdir, config, sys.argv)
      write_json_atomic(os.path.join(workdir, DATA_INFO_FILE), data.info)

  batches = make_batches(config, data, process_index=jax.process_index(),
                         process_count=jax.process_count())
  checkpointer = Checkpointer(workdir, config.checkpoint)
  restored = checkpointer.restore(jax.eval_shape(program.init_state), batches)
  if restored is None:
    state, start_step = program.init_state(), 0
  else:
    state, start_step = restored
    logging.info("Resumed from the checkpoint at step %d.", start_step)

  with reporting_write_errors(f"{workdir}/metrics.jsonl"):
    writer = MetricsWriter(workdir, enabled=is_writer, resume_step=start_step)
  num_steps = config.train.num_steps
  progress = Progress(start_step=start_step, num_steps=num_steps)
  metric_names: list[str] = []
  eval_names: set[str] = set()
  logged: dict[str, float] = {}
  logging.info("Training %s on %s, steps %d to %d, over %d devices into %s.",
               config.get("experiment", "gan"), data.info.get("name"), start_step,
               num_steps, mesh.size, workdir)
  try:
    for step in range(start_step + 1, num_steps + 1):
      batch = {} if batches is None else parallel.put_global_batch(next(batches), mesh)
      state, metrics = program.train_step(state, batch)
      metric_names = list(metrics)
      is_last = step == num_steps
      is_log_step = step % config.train.log_every == 0 or is_last
      stop = preemption.agreed(is_sync_point=is_log_step)
      evaluated = {}
      if eval_every and (step % eval_every == 0 or is_last):
        if config.train.on_nonfinite == "stop":
          _guard_finite(state, metric_names, check_parameters=False)
        evaluated = evaluate(program, state)
        if step_names is not None and not eval_names:
          check_evaluated(config, step_names, evaluated)
        eval_names.update(evaluated)
        logging.info("Evaluation at step %d: %s", step,
                     ", ".join(f"{k} {v:.4g}" for k, v in evaluated.items()))
      if is_log_step:
        logged = {k: float(v) for k, v in _fetch(metrics).items()}
        if config.train.on_nonfinite == "stop":
          _guard_finite(state, metric_names, check_parameters=False)
        logged["nonfinite_steps"] = float(_fetch(state.divergence.count))
        logged.update(progress.update(step))
        logged.update(evaluated)
        with reporting_write_errors(f"the metrics of step {step}"):
          writer.write_scalars(step, logged)
        logging.info("%s", progress.describe(step, logged))
      elif evaluated:
        with reporting_write_errors(f"the metrics of step {step}"):
          writer.write_scalars(step, evaluated)
      if step % config.train.sample_every == 0 or is_last:
        # Every process computes (the grids are one computation over the global mesh);
        # process 0 writes.
        grids = _fetch(program.grids(state))
        if is_writer:
          write_grids(workdir, step, grids, writer)
      if step % config.checkpoint.every == 0 or is_last or stop:
        if config.train.on_nonfinite == "stop":
          _guard_finite(state, metric_names, check_parameters=True)
        # Sample-quality metrics count only for the checkpoint of their own step.
        losses = {k: v for k, v in logged.items() if k not in eval_names}
        checkpointer.save(step, state, batches, metrics={**losses, **evaluated})
      if stop:
        logging.info("Stopped at step %d; rerun the same command to resume.", step)
        break
  finally:
    try:
      checkpointer.wait()
    finally:
      checkpointer.close()
      writer.close()
  return logged
