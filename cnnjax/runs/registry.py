"""The experiment registry: every kind of training run, by its config's `experiment`
name. Adding a kind is one module of this package (holding `KIND`) and one entry in
`_KINDS` below; `run.py`, the sweep launcher and every command that opens a run look
kinds up here.
"""

import ml_collections

from cnnjax.errors import ConfigError
from cnnjax.runs import (classifier, cyclegan, factors, fast_style, gan, gan_encoder, pix2pix,
                         vae)
from cnnjax.runs.kind import ExperimentKind

DEFAULT_KIND = "gan"   # Configs without an `experiment` field (older GAN runs).

_KINDS: tuple[ExperimentKind, ...] = (
    gan.KIND,
    vae.KIND,
    classifier.KIND,
    pix2pix.KIND,
    cyclegan.KIND,
    factors.KIND,
    gan_encoder.KIND,
    fast_style.KIND,
)
KINDS: dict[str, ExperimentKind] = {kind.name: kind for kind in _KINDS}


def get_kind(name: str) -> ExperimentKind:
  """The kind called `name`.

  Raises:
    ConfigError: no such kind (the message lists the known ones).
  """
  if name not in KINDS:
    raise ConfigError(f"Unknown experiment {name!r}: use one of {', '.join(KINDS)} "
                      "(config field `experiment`).")
  return KINDS[name]


def kind_of(config: ml_collections.ConfigDict) -> ExperimentKind:
  """The kind of a config (its `experiment` field; "gan" when absent)."""
  return get_kind(config.get("experiment", DEFAULT_KIND))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains (or resumes) the run of `config` in `workdir` with its kind's runtime."""
  return kind_of(config).train(config, workdir)
