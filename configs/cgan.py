"""Conditional DCGAN on handwritten digits: samples of the class asked for.

The generator is the article's cGAN (Mirza & Osindero 2014): a learned label embedding
concatenated to the latent. The discriminator is the projection discriminator (Miyato &
Koyama 2018) on DCGAN features. Every GAN-family field is the same as in
configs/dcgan.py, so an ablation changes one of them (e.g.
--config.model.d_conditioning=concat for the article's discriminator too).

Variants (`--config=configs/cgan.py:VARIANT`):
  (none)   cGAN on `digits` at 28x28, minutes on a 2-core CPU.
  tiny     a few-channel model for tests, with DiffAugment and the EMA on.
  ema      samples from an EMA of the generator's weights (decay 0.999 from step 500);
           the training itself is the default's, step for step (see
           docs/results_gan_family.md for what the EMA does on so short a run).
  acgan    the same generator with an AC-GAN discriminator (auxiliary classifier).
"""

import ml_collections

from configs import dcgan


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked experiment config for `variant`: configs/dcgan.py's fields, with
  the values below."""
  config = dcgan.get_config()
  config.model.g_conditioning = "concat"  # The article's cGAN generator.
  config.model.d_conditioning = "projection"
  config.train.num_steps = 2000
  config.train.num_samples = 100  # A 10x10 grid: one class per row.
  if variant in (None, ""):
    pass
  elif variant == "tiny":
    dcgan.make_tiny(config)
    config.optim.ema_decay = 0.999
    config.train.diffaugment = "translation,cutout,color"
  elif variant == "ema":
    config.optim.ema_decay = 0.999
    config.optim.ema_start_step = 500
  elif variant == "acgan":
    config.model.d_conditioning = "acgan"
  else:
    raise ValueError(f"Unknown variant {variant!r} of configs/cgan.py; "
                     "use one of '', 'tiny', 'ema', 'acgan'.")
  return config
