"""`ExperimentKind`: one kind of training run, declared once.

A kind is a module of this package holding one `KIND = ExperimentKind(...)`, listed in
`cnnjax.runs.registry`. The shared runtime (`cnnjax.train.loop.run_training`) trains it
from its validator, program builder and data hooks, which gives every kind checkpoints
with exact resume, preemption, metrics.jsonl and TensorBoard, sample grids and sweeps;
the commands (`run.py sample`, `evaluate`, and those that open finished runs) ask the
kind what they mean for it.
"""

import dataclasses
from typing import Any, Callable

import ml_collections

from cnnjax.errors import ConfigError
from cnnjax.train.loop import (EvaluatorFactory, MakeBatches, OpenData, image_batches,
                               open_image_data, run_training)

# `(config, num_devices)`, raising `ConfigError` for the first bad field.
Validator = Callable[[ml_collections.ConfigDict, int], None]
# `(config, *, mesh, data_info) -> program` (see `cnnjax.train.loop`).
ProgramBuilder = Callable[..., Any]
# `(run: OpenRun, *, num, seed, labels) -> images (num, H, W, C) in [-1, 1]`.
Sampler = Callable[..., Any]
# `(spec: RunSpec, *, step, seed, num_samples, extractor_workdir, reference_split) ->
# result`, the result being what `run.py evaluate` writes to `DIR/eval.json`:
# {"step", "metrics", "settings"}.
Evaluator = Callable[..., dict[str, Any]]
# `(config, workdir, logged_metrics) -> metrics`: work after training (final scores).
AfterTraining = Callable[[ml_collections.ConfigDict, str, dict[str, float]],
                         dict[str, float]]


@dataclasses.dataclass(frozen=True)
class ExperimentKind:
  """Everything the runtime and the commands need of one kind of run.

  Attributes:
    name: the config's `experiment` field.
    summary: one line for listings and errors.
    config_hint: the command that trains one, for error messages.
    validate: checks a config before anything is written.
    build_program: the program a checkpoint restores into (sampling, evaluation,
      editing): `(config, *, mesh, data_info)`.
    build_training_program: the program training runs, when it needs more than
      `build_program` (e.g. held-out data); default `build_program`.
    open_data, make_batches: the data hooks of `run_training` (default: one image
      dataset, optionally labelled).
    make_evaluator: periodic metrics during training (`eval.every`), or None.
    after_training: work once training returns (e.g. a final test score), or None.
    sample: what `run.py sample` draws from a restored run, or None (cannot sample).
    evaluate: what `run.py evaluate` scores, or None (nothing to evaluate).
  """
  name: str
  summary: str
  config_hint: str
  validate: Validator
  build_program: ProgramBuilder
  build_training_program: ProgramBuilder | None = None
  open_data: OpenData = open_image_data
  make_batches: MakeBatches = image_batches
  make_evaluator: EvaluatorFactory | None = None
  after_training: AfterTraining | None = None
  sample: Sampler | None = None
  evaluate: Evaluator | None = None

  def train(self, config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains (or resumes) a run of this kind in `workdir`; returns its last metrics."""
    logged = run_training(
        config, workdir, validate=self.validate,
        build_program=self.build_training_program or self.build_program,
        make_evaluator=self.make_evaluator, open_data=self.open_data,
        make_batches=self.make_batches)
    if self.after_training is None:
      return logged
    return self.after_training(config, workdir, logged)

  def require(self, capability: str, workdir: str) -> Callable[..., Any]:
    """The `sample` or `evaluate` function, or a `ConfigError` saying this kind has none."""
    function = getattr(self, capability)
    if function is None:
      raise ConfigError(f"{workdir} holds a {self.name!r} run ({self.summary}), which "
                        f"has nothing to {capability}; pass the --workdir of a "
                        "generative run.")
    return function
