"""The `classifier` kind: the in-domain CNN classifier (`configs/classifier.py`) whose
features and logits score generated images. Once training completes, its test-split
accuracy goes to `DIR/eval.json`; `load_extractor` restores it as the metrics' feature
extractor.
"""

import os

import jax
import ml_collections
from absl import logging

from cnnjax.errors import CheckpointError, ConfigError, WorkdirError
from cnnjax.evaluation.features import Extractor, split_accuracy, weights_digest
from cnnjax.io.metrics_writer import MetricsWriter
from cnnjax.io.workdir import EVAL_FILE, write_json_atomic
from cnnjax.runs.kind import ExperimentKind
from cnnjax.runs.restore import open_as
from cnnjax.train.classifier_program import (TRAIN_CLASSIFIER_HINT,
                                             build_classifier_program,
                                             validate_classifier_config)


def _build_program(config: ml_collections.ConfigDict, *, mesh, data_info: dict):
  return build_classifier_program(config, mesh=mesh, channels=data_info["image_shape"][-1],
                                  num_classes=data_info["num_classes"])


def load_extractor(workdir: str, *, step: int | None = None,
                   batch_size: int | None = None) -> Extractor:
  """Restores the classifier trained in `workdir` (read-only; newest step by default).

  Raises:
    WorkdirError, CheckpointError: no trained classifier there (the message says how
      to train one).
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  try:
    run = open_as(workdir, KIND, step)
  except WorkdirError:
    raise WorkdirError(f"{workdir} holds no trained classifier; train one with "
                       f"`{TRAIN_CLASSIFIER_HINT}`.") from None
  except ConfigError as error:
    raise WorkdirError(str(error)) from None
  except CheckpointError:
    if step is not None:
      raise
    raise CheckpointError(f"The classifier in {workdir} has no checkpoint yet; finish "
                          f"training it with `{TRAIN_CLASSIFIER_HINT}`.") from None
  model_state = run.state.model
  extractor_id = (f"classifier:{workdir}@{run.step}:"
                  f"{weights_digest((model_state.params, model_state.batch_stats))}")
  return Extractor(run.program, model_state, extractor_id=extractor_id,
                   batch_size=batch_size or run.config.train.eval_batch_size,
                   step=run.step)


def _score_test_split(config: ml_collections.ConfigDict, workdir: str,
                      logged: dict[str, float]) -> dict[str, float]:
  """Once training is complete, scores the test split into `workdir/eval.json`.

  Returns:
    The last logged training metrics and, once complete, the `test_` metrics.
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  extractor = load_extractor(workdir, batch_size=config.train.eval_batch_size)
  step = extractor.step
  if step < config.train.num_steps:  # Preempted: evaluate when the run completes.
    return logged
  test_metrics = {f"test_{name}": value for name, value in split_accuracy(
      extractor, config.data, config.data.test_split).items()}
  logging.info("Test accuracy at step %d: %.4f on %d %s examples.", step,
               test_metrics["test_accuracy"], test_metrics["test_num_examples"],
               config.data.test_split)
  if jax.process_index() == 0:
    if logged:  # Steps ran in this launch: log the test metrics with them, once.
      writer = MetricsWriter(workdir, resume_step=step)
      writer.write_scalars(step, test_metrics)
      writer.close()
    write_json_atomic(os.path.join(workdir, EVAL_FILE), {
        "step": step, "metrics": test_metrics,
        "settings": {"extractor_id": extractor.extractor_id, "dataset": config.data.name,
                     "split": config.data.test_split,
                     "image_size": config.data.image_size}})
  return {**logged, **test_metrics}


KIND = ExperimentKind(
    name="classifier",
    summary="an in-domain classifier; its test accuracy is in its eval.json",
    config_hint=TRAIN_CLASSIFIER_HINT,
    validate=validate_classifier_config,
    build_program=_build_program,
    after_training=_score_test_split,
)
