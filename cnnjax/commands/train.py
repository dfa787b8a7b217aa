"""`run.py [train] --config=FILE[:VARIANT] --workdir=DIR`: train (or resume) a run."""

from cnnjax.commands import common

NAME = "train"
USAGE = """\
  train   Train an experiment into a work directory:
            python run.py --config=configs/dcgan.py --workdir=DIR
          Pick a config variant after a colon (--config=configs/dcgan.py:tiny) and
          override any field (--config.train.num_steps=500). Misspelt fields are errors.
          The config's `experiment` field names its kind (gan, vae, classifier, ...).
          Relaunching the same command on the same DIR resumes from its newest complete
          checkpoint; SIGTERM/SIGINT checkpoint the current step and exit with status 0."""


def main() -> None:
  workdir = common.required_workdir()
  config = common.loaded_config()
  from cnnjax.runs.registry import train_and_evaluate  # Imports jax: after flag errors.
  train_and_evaluate(config, workdir)
