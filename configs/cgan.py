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


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked experiment config for `variant`."""
  config = ml_collections.ConfigDict()
  config.experiment = "gan"
  config.seed = 0

  config.data = ml_collections.ConfigDict(dict(
      name="digits",     # A dataset with a `label` class feature.
      data_dir="",       # "" means TFDS's default (or $TFDS_DATA_DIR).
      split="train",
      image_size=28,
      resize="pad",
      cache_in_memory=True,
      num_threads=4,
      prefetch=8,
  ))

  config.model = ml_collections.ConfigDict(dict(
      name="dcgan",
      latent_dim=100,
      g_width=64,
      d_width=64,
      upsample="fast",
      bn_momentum=0.9,
      dtype="float32",
      g_conditioning="concat",    # The article's cGAN generator.
      d_conditioning="projection",
      label_embed_dim=0,          # 0: as many as classes.
      d_norm="batch",
      g_spectral_norm=False,
      d_spectral_norm=False,
      sn_steps=1,
  ))

  config.loss = ml_collections.ConfigDict(dict(
      name="non_saturating",
      gp_weight=0.0,
      r1_weight=0.0,
      aux_class_weight=1.0,
  ))

  config.optim = ml_collections.ConfigDict(dict(
      g_lr=2e-4,
      d_lr=2e-4,
      b1=0.5,
      b2=0.999,
      ema_decay=0.0,     # No EMA: see the `ema` variant.
      ema_start_step=0,
  ))

  config.train = ml_collections.ConfigDict(dict(
      batch_size=64,
      num_steps=2000,
      log_every=100,
      sample_every=500,
      num_samples=100,   # A 10x10 grid: one class per row, one latent per column.
      on_nonfinite="stop",
      d_steps=1,
      diffaugment="",
  ))

  config.eval = ml_collections.ConfigDict(dict(
      every=0,
      extractor_workdir="",
      reference_split="test",
      num_samples=5000,
      batch_size=500,
      max_reference_features=10000,
      reference_cache_dir="",
  ))

  config.checkpoint = ml_collections.ConfigDict(dict(
      every=500,
      keep=3,
      best_metric="",
      best_mode="min",
      async_save=True,
  ))

  if variant in (None, ""):
    pass
  elif variant == "tiny":
    config.model.latent_dim = 8
    config.model.g_width = 4
    config.model.d_width = 4
    config.optim.ema_decay = 0.999
    config.train.batch_size = 16
    config.train.num_steps = 20
    config.train.log_every = 5
    config.train.sample_every = 10
    config.train.num_samples = 16
    config.train.diffaugment = "translation,cutout,color"
    config.checkpoint.every = 10
    config.eval.num_samples = 64
    config.eval.batch_size = 32
  elif variant == "ema":
    config.optim.ema_decay = 0.999
    config.optim.ema_start_step = 500
  elif variant == "acgan":
    config.model.d_conditioning = "acgan"
  else:
    raise ValueError(f"Unknown variant {variant!r} of configs/cgan.py; "
                     "use one of '', 'tiny', 'ema', 'acgan'.")
  config.lock()
  return config
