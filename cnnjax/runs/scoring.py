"""What sampling and evaluation mean for the generative kinds (GANs, VAEs): prior
samples, and their sample quality under an in-domain classifier (FID, KID, IS,
precision/recall/density/coverage, the two-sample test; `cnnjax.evaluation.evaluate`),
during training (`eval.every`) and for `run.py evaluate`.
"""

import os
from typing import Any, Callable, Sequence

import jax
import ml_collections
from absl import logging

from cnnjax.data.sources import get_data_source
from cnnjax.errors import ConfigError
from cnnjax.evaluation.evaluate import (PRDC_K, RunEvaluator, check_num_samples,
                                        eval_settings)
from cnnjax.runs.classifier import load_extractor
from cnnjax.runs.restore import OpenRun, RunSpec, open_spec
from cnnjax.train.classifier_program import TRAIN_CLASSIFIER_HINT
from cnnjax.train.gan_program import grid_row_labels


def run_evaluator(config: ml_collections.ConfigDict, *,
                  extractor_workdir: str | None = None,
                  reference_split: str | None = None) -> RunEvaluator:
  """The evaluator of a generative run's config (`eval` section; arguments override it).

  Raises:
    ConfigError: no extractor configured (the message says how to train one).
    WorkdirError, CheckpointError: the extractor directory holds no classifier.
    DatasetError: the reference split is unavailable.
  """
  extractor_workdir = extractor_workdir or eval_settings(config)["extractor_workdir"]
  if not extractor_workdir:
    raise ConfigError(
        "No classifier to score the run with: train one with "
        f"`{TRAIN_CLASSIFIER_HINT}`, then set eval.extractor_workdir=DIR (relaunch the "
        "run's train command with --config.eval.extractor_workdir=DIR).")
  return RunEvaluator.for_config(config, load_extractor(extractor_workdir),
                                 reference_split=reference_split)


def check_eval_inputs(config: ml_collections.ConfigDict) -> None:
  """Checks the `eval` section's paths and split whether or not the run evaluates while
  training (`run.py evaluate` reads them later): a named classifier must be one, the
  reference split must exist, the cache directory must not be a file.

  Raises:
    ConfigError, WorkdirError, CheckpointError, DatasetError: the first bad field.
  """
  settings = eval_settings(config)
  cache_dir = settings["reference_cache_dir"]
  if cache_dir and os.path.exists(cache_dir) and not os.path.isdir(cache_dir):
    raise ConfigError(f"eval.reference_cache_dir={cache_dir} is a file; pass a directory "
                      "(or '' for <data_dir>/cnnjax_reference).")
  get_data_source(config.data.name, settings["reference_split"],
                  config.data.data_dir or None)
  if settings["extractor_workdir"]:
    load_extractor(settings["extractor_workdir"])


def make_training_evaluator(config: ml_collections.ConfigDict
                            ) -> Callable[[Any, Any], dict[str, float]] | None:
  """The periodic evaluation of a generative run (`run_training`'s evaluator factory).

  Every evaluation scores `eval.num_samples` samples drawn with the run's seed, so that
  numbers compare across steps.

  Returns:
    `evaluate(program, state) -> metrics`, or None when `eval.every` is 0.

  Raises:
    ConfigError: `eval.every` > 0 and no extractor configured (says how to train one);
      a bad `eval` field (`check_eval_inputs`), also when `eval.every` is 0.
  """
  settings = eval_settings(config)
  check_eval_inputs(config)
  if not settings["every"]:
    return None
  evaluator = run_evaluator(config)

  def evaluate(program: Any, state: Any) -> dict[str, float]:
    metrics, _ = evaluator.evaluate(program, state, num_samples=settings["num_samples"],
                                    seed=config.seed)
    return metrics

  return evaluate


def evaluate_generative_run(spec: RunSpec, *, num_samples: int | None = None,
                            seed: int = 0, step: int | None = None,
                            extractor_workdir: str | None = None,
                            reference_split: str | None = None) -> dict[str, Any]:
  """Scores a generative run's checkpoint (what `run.py evaluate` means for it).

  The extractor and reference are loaded before the run's state, so a missing
  classifier fails before anything is restored.

  Args:
    spec: the run.
    num_samples, extractor_workdir, reference_split: override the run's `eval` section.
    seed: seed of the samples.
    step: the checkpoint (default: the newest).

  Returns:
    {"step", "metrics", "settings"}, for `DIR/eval.json`.

  Raises:
    ConfigError: no extractor configured, or too few samples.
    WorkdirError, CheckpointError: unusable run or classifier.
  """
  if num_samples is not None:
    check_num_samples(num_samples, PRDC_K)
  evaluator = run_evaluator(spec.config, extractor_workdir=extractor_workdir,
                            reference_split=reference_split)
  run = open_spec(spec, step)
  metrics, settings = evaluator.evaluate(
      run.program, run.state,
      num_samples=num_samples or eval_settings(spec.config)["num_samples"], seed=seed)
  logging.info("Step %d of %s: %s", run.step, spec.workdir,
               ", ".join(f"{name} {value:.4g}" for name, value in metrics.items()))
  return {"step": run.step, "metrics": metrics,
          "settings": {**settings, "checkpoint_step": run.step}}


def check_sample_labels(program: Any, labels: Sequence[int], workdir: str) -> None:
  """Raises `ConfigError` unless `program` is conditional and knows every label."""
  num_classes = getattr(program, "num_classes", 0)
  if not num_classes:
    raise ConfigError(f"--labels needs a class-conditional run, and {workdir} holds an "
                      "unconditional one; leave --labels out.")
  if not labels:
    raise ConfigError("--labels is empty; give comma-separated class labels, e.g. 0,1,2.")
  for label in labels:
    if not 0 <= label < num_classes:
      raise ConfigError(f"--labels: {label} is not a class of this run; use labels from "
                        f"0 to {num_classes - 1}.")


def sample_prior(run: OpenRun, *, num: int, seed: int,
                 labels: Sequence[int] | None = None) -> jax.Array:
  """`num` images (num, H, W, C) in [-1, 1] of a generative run, latents from `seed`.

  Args:
    run: the restored run.
    num: images to draw.
    seed: seed of the latents (`normal(key(seed), (num, Z))`).
    labels: classes of a conditional run, one per grid row (cycling); None: every
      class of a conditional run (or none for an unconditional one).
  """
  program = run.program
  if labels is not None:
    check_sample_labels(program, labels, run.workdir)
  latents = jax.random.normal(jax.random.key(seed), (num, program.latent_dim))
  if labels is None:
    return program.generate(run.state, latents)
  return program.generate(run.state, latents, grid_row_labels(num, labels))
