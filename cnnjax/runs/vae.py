"""The `vae` kind: the convolutional VAE family of `configs/vae.py` (VAE, beta-VAE,
CVAE). Training also tracks the held-out ELBO; with `eval.at_end` the test-set ELBO and
IWAE bound of the final step go to `DIR/likelihood.json` (`run.py likelihood` computes
them for any checkpoint). Samples decode prior latents; `run.py evaluate` scores their
sample quality as for GANs.
"""

import contextlib
import os
from typing import Any

import jax
import ml_collections
from absl import logging

from cnnjax.data.splits import load_split
from cnnjax.evaluation.vae_likelihood import (LIKELIHOOD_FILE, check_num_importance,
                                              read_likelihood, score_likelihood)
from cnnjax.io.workdir import write_json_atomic
from cnnjax.runs.kind import ExperimentKind
from cnnjax.runs.restore import RunSpec, open_spec, spec_as
from cnnjax.runs.scoring import evaluate_generative_run, make_training_evaluator, sample_prior
from cnnjax.train.checkpointing import Checkpointer
from cnnjax.train.vae_program import HeldOut, VaeProgram, build_vae_program
from cnnjax.train.vae_validation import validate_vae_config

CONFIG_HINT = "python run.py --config=configs/vae.py --workdir=DIR"


def _build_program(config: ml_collections.ConfigDict, *, mesh, data_info: dict
                   ) -> VaeProgram:
  return build_vae_program(config, mesh=mesh, channels=data_info["image_shape"][-1],
                           num_classes=data_info["num_classes"])


def _build_training_program(config: ml_collections.ConfigDict, *, mesh, data_info: dict
                            ) -> VaeProgram:
  """The VAE program with the held-out split (`eval.likelihood_split`) loaded for its
  periodic ELBO and reconstruction grid."""
  images, labels = load_split(config.data.name, config.eval.likelihood_split,
                              config.data.data_dir, config.data.image_size,
                              config.data.resize)
  return build_vae_program(config, mesh=mesh, channels=data_info["image_shape"][-1],
                           num_classes=data_info["num_classes"],
                           held_out=HeldOut(images=images, labels=labels))


def likelihood_of_run(spec: RunSpec, *, split: str = "test",
                      num_importance: int | None = None, seed: int = 0,
                      step: int | None = None) -> dict[str, Any]:
  """The test ELBO and IWAE log p(x) of a trained VAE, written to `DIR/likelihood.json`.

  Args:
    spec: the VAE run (see `cnnjax.runs.restore.spec_as`).
    split: the dataset split to score.
    num_importance: k of the IWAE bound (default: the config's `eval.num_importance`).
    seed: seed of the binarisation and of the posterior samples.
    step: the checkpoint to evaluate (default: the newest).

  Returns:
    {"step", "metrics": {...}, "settings": {k, split, step, seed, ...}}, as written.
  """
  if num_importance is not None:
    check_num_importance(num_importance)  # Before anything is restored.
  run = open_spec(spec, step)
  result = score_likelihood(spec.config, run.program, run.state, split=split,
                            num_importance=num_importance, seed=seed, step=run.step)
  if jax.process_index() == 0:
    write_json_atomic(os.path.join(spec.workdir, LIKELIHOOD_FILE), result)
  return result


def _final_likelihood(config: ml_collections.ConfigDict, workdir: str,
                      logged: dict[str, float]) -> dict[str, float]:
  """With `eval.at_end`, the test likelihood of the last step (prefixed `final_`),
  unless training stopped early or `likelihood.json` already has it."""
  if not config.eval.at_end:
    return logged
  workdir = os.path.abspath(workdir)
  num_steps = config.train.num_steps
  with contextlib.closing(Checkpointer(workdir, config.checkpoint,
                                       read_only=True)) as checkpointer:
    if num_steps not in checkpointer.all_steps():
      logging.info("Training stopped before step %d; no final evaluation.", num_steps)
      return logged
  previous = read_likelihood(workdir)
  wanted = {"k": config.eval.num_importance, "split": config.eval.likelihood_split,
            "step": num_steps, "seed": config.seed}
  if previous and all(previous["settings"].get(name) == value
                      for name, value in wanted.items()):
    final = previous["metrics"]
  else:
    final = likelihood_of_run(spec_as(workdir, KIND), split=config.eval.likelihood_split,
                              num_importance=config.eval.num_importance,
                              seed=config.seed, step=num_steps)["metrics"]
  return {**logged, **{f"final_{name}": value for name, value in final.items()}}


KIND = ExperimentKind(
    name="vae",
    summary="a VAE (VAE, beta-VAE, CVAE; configs/vae.py)",
    config_hint=CONFIG_HINT,
    validate=validate_vae_config,
    build_program=_build_program,
    build_training_program=_build_training_program,
    make_evaluator=make_training_evaluator,
    after_training=_final_likelihood,
    sample=sample_prior,
    evaluate=evaluate_generative_run,
)
