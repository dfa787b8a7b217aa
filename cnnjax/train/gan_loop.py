"""`train_and_evaluate` for GANs: the shared runtime with the GAN's validator and program."""

import ml_collections

from cnnjax.evaluation.evaluate import make_training_evaluator
from cnnjax.train.gan_program import build_gan_program
from cnnjax.train.loop import run_training
from cnnjax.train.validation import validate_gan_config


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains (or resumes) the GAN described by `config` in `workdir`."""
  return run_training(config, workdir, validate=validate_gan_config,
                      build_program=build_gan_program,
                      make_evaluator=make_training_evaluator)
