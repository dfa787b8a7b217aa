"""Which training loop runs a config: `config.experiment` names it."""

from typing import Callable

import ml_collections

from cnnjax.errors import ConfigError


def _gan(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  from cnnjax.train.gan_loop import train_and_evaluate
  return train_and_evaluate(config, workdir)


def _classifier(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  from cnnjax.train.classifier_loop import train_and_evaluate
  return train_and_evaluate(config, workdir)


def _vae(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  from cnnjax.train.vae_loop import train_and_evaluate
  return train_and_evaluate(config, workdir)


EXPERIMENTS: dict[str, Callable[[ml_collections.ConfigDict, str], dict[str, float]]] = {
    "gan": _gan,
    "classifier": _classifier,
    "vae": _vae,
}


def build_program(config: ml_collections.ConfigDict, **kwargs):
  """The program (jitted init, step, generate) of `config.experiment`, for restoring."""
  experiment = config.get("experiment", "gan")
  if experiment == "gan":
    from cnnjax.train.gan_program import build_gan_program
    return build_gan_program(config, **kwargs)
  if experiment == "vae":
    from cnnjax.train.vae_program import build_vae_program
    return build_vae_program(config, **kwargs)
  raise ConfigError(f"Runs of experiment {experiment!r} cannot be sampled.")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Runs the training loop of `config.experiment` (default "gan") into `workdir`."""
  experiment = config.get("experiment", "gan")
  if experiment not in EXPERIMENTS:
    raise ConfigError(f"Unknown experiment {experiment!r}: use one of "
                      f"{', '.join(EXPERIMENTS)}.")
  return EXPERIMENTS[experiment](config, workdir)
