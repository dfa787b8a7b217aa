"""LSGAN (Mao et al. 2017): least-squares losses (targets a = 0, b = c = 1) on the DCGAN.

Everything else is configs/dcgan.py's default experiment, so the two compare the loss
alone.

Variants (`--config=configs/lsgan.py:VARIANT`):
  (none)   LSGAN on `digits` at 28x28.
  tiny     a few-channel model for tests.
"""

import ml_collections

from configs import dcgan


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked experiment config for `variant`: configs/dcgan.py's fields, with
  the values below."""
  config = dcgan.get_config()
  config.loss.name = "least_squares"
  if variant in (None, ""):
    pass
  elif variant == "tiny":
    dcgan.make_tiny(config)
  else:
    raise ValueError(f"Unknown variant {variant!r} of configs/lsgan.py; "
                     "use one of '', 'tiny'.")
  return config
