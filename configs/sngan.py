"""SNGAN: the ResNet generator and discriminator of Miyato et al. (2018), hinge loss,
spectral normalisation in the discriminator.

On `digits` padded to 32x32, with narrower networks than the paper's (width 64) and
batches of 32 so that it trains in minutes on a 2-core CPU, and one discriminator step
per generator step with Adam(2e-4, 0.5, 0.999), the paper's setting "C" (spectral norm
made training robust to it).

Variants (`--config=configs/sngan.py:VARIANT`):
  (none)      unconditional SNGAN on `digits` at 32x32.
  projection  class-conditional as Miyato & Koyama (2018): conditional BatchNorm in the
              generator, the projection discriminator. At this width and length the
              generator has not yet learnt to follow the class (its samples at 600
              steps ignore it); it needs a wider discriminator or a longer run.
  tiny        a two-channel conditional model (cBN + projection) for tests.
  shapes      on the procedural `shapes` dataset (32x32, colour).
  64          the 64x64 architecture, on `shapes` resized to 64x64.
"""

import ml_collections

from configs import dcgan


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked experiment config for `variant`: configs/dcgan.py's fields, with
  the values below."""
  config = dcgan.get_config()
  config.model.name = "sngan"
  config.model.latent_dim = 128
  config.model.g_width = 8
  config.model.d_width = 16
  config.model.d_norm = "none"
  config.model.d_spectral_norm = True
  config.loss.name = "hinge"
  config.data.image_size = 32  # digits padded to 32x32.
  config.train.batch_size = 32
  config.train.num_steps = 2000
  config.train.num_samples = 100
  if variant in (None, ""):
    pass
  elif variant == "projection":
    config.model.g_conditioning = "cbn"
    config.model.d_conditioning = "projection"
  elif variant == "tiny":
    dcgan.make_tiny(config)
    config.model.g_conditioning = "cbn"
    config.model.d_conditioning = "projection"
    config.model.g_width = 2
    config.model.d_width = 2
  elif variant == "shapes":
    config.data.name = "shapes"
    config.train.num_samples = 36  # A 6x6 grid (six classes: one per row if conditional).
  elif variant == "64":
    config.data.name = "shapes"
    config.data.image_size = 64
    config.data.resize = "resize"
    config.train.num_samples = 36
  else:
    raise ValueError(f"Unknown variant {variant!r} of configs/sngan.py; "
                     "use one of '', 'projection', 'tiny', 'shapes', '64'.")
  return config
