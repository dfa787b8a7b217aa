"""`train_and_evaluate` for VAEs: the shared runtime with the VAE's validator and program
(and, with `eval.every` > 0, the sample-quality metrics of prior samples during training,
as for GANs), then (with `eval.at_end`) the test-set ELBO and IWAE bound in
`workdir/likelihood.json`.
"""

import contextlib
import os

import ml_collections
from absl import logging
from jax.sharding import Mesh

from cnnjax.data.pipeline import RESIZE_MODES
from cnnjax.evaluation.evaluate import make_training_evaluator
from cnnjax.evaluation.features import load_split
from cnnjax.evaluation.vae_likelihood import evaluate_vae_run, read_likelihood
from cnnjax.models.dcgan import resolution_plan
from cnnjax.models.upsample import upsample_layer
from cnnjax.train.checkpointing import Checkpointer, validate_checkpoint_config
from cnnjax.train.divergence import NONFINITE_MODES
from cnnjax.train.loop import run_training
from cnnjax.train.validation import _require, _require_positive, validate_eval_config
from cnnjax.train.vae_program import (HeldOut, VaeProgram, build_vae_program,
                                      likelihood_from_config)

VAE_MODELS = ("conv_vae",)


def _require_choice(config: ml_collections.ConfigDict, path: str,
                    choices: tuple[str, ...]) -> None:
  section, field = path.split(".")
  value = config[section][field]
  _require(value in choices, f"{path} must be one of {', '.join(choices)}, got {value!r}.")


def validate_vae_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises `ConfigError` naming the first invalid field of a VAE config.

  Args:
    config: the experiment config.
    num_devices: devices the global batch is split over.
  """
  _require_choice(config, "model.name", VAE_MODELS)
  upsample_layer(config.model.upsample)
  resolution_plan(config.data.image_size)
  _require_choice(config, "data.resize", RESIZE_MODES)
  _require_choice(config, "train.on_nonfinite", NONFINITE_MODES)
  positive_fields = {
      "model": ("latent_dim", "encoder_width", "decoder_width"),
      "data": ("num_threads", "prefetch"),
      "optim": ("lr",),
      "train": ("batch_size", "log_every", "sample_every", "num_samples"),
      "eval": ("elbo_num_examples", "importance_chunk", "likelihood_batch_size"),
  }
  for section, names in positive_fields.items():
    _require_positive(config[section], section, names)
  non_negative = ("likelihood.gaussian_scale", "loss.beta", "loss.kl_warmup_steps",
                  "train.num_steps", "eval.elbo_every", "eval.num_importance")
  for path in non_negative:
    section, field = path.split(".")
    _require(config[section][field] >= 0,
             f"{path} must be >= 0, got {config[section][field]}.")
  _require(0.0 <= config.optim.b1 < 1.0 and 0.0 <= config.optim.b2 < 1.0,
           f"optim.b1 and optim.b2 must be in [0, 1), got {config.optim.b1} and "
           f"{config.optim.b2}.")
  likelihood_from_config(config)
  validate_checkpoint_config(config.checkpoint)
  validate_eval_config(config)
  _require(config.train.batch_size % num_devices == 0,
           f"train.batch_size={config.train.batch_size} is not divisible by the "
           f"{num_devices} devices; use a multiple of {num_devices}.")


def build_training_program(config: ml_collections.ConfigDict, *, mesh: Mesh,
                           channels: int, num_classes: int | None = None) -> VaeProgram:
  """The VAE program with the held-out split (`eval.likelihood_split`) loaded for its
  periodic ELBO and reconstruction grid."""
  images, labels = load_split(config.data.name, config.eval.likelihood_split,
                              config.data.data_dir, config.data.image_size,
                              config.data.resize)
  return build_vae_program(config, mesh=mesh, channels=channels, num_classes=num_classes,
                           held_out=HeldOut(images=images, labels=labels))


def _final_evaluation(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """The test likelihood of the last step, unless training stopped early or it exists."""
  num_steps = config.train.num_steps
  with contextlib.closing(Checkpointer(workdir, config.checkpoint,
                                       read_only=True)) as checkpointer:
    if num_steps not in checkpointer.all_steps():
      logging.info("Training stopped before step %d; no final evaluation.", num_steps)
      return {}
  previous = read_likelihood(workdir)
  wanted = {"k": config.eval.num_importance, "split": config.eval.likelihood_split,
            "step": num_steps, "seed": config.seed}
  if previous and all(previous["settings"].get(name) == value
                      for name, value in wanted.items()):
    return previous["metrics"]
  return evaluate_vae_run(workdir, split=config.eval.likelihood_split,
                          num_importance=config.eval.num_importance, seed=config.seed,
                          step=num_steps)["metrics"]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains (or resumes) the VAE described by `config` in `workdir`, then evaluates it.

  Returns:
    The metrics of the last logged step, and with `eval.at_end` the test likelihood's
    (prefixed `final_`).
  """
  logged = run_training(config, workdir, validate=validate_vae_config,
                        build_program=build_training_program,
                        make_evaluator=make_training_evaluator)
  if not config.eval.at_end:
    return logged
  final = _final_evaluation(config, os.path.abspath(workdir))
  return {**logged, **{f"final_{name}": value for name, value in final.items()}}
