"""LSGAN (Mao et al. 2017): least-squares losses (targets a = 0, b = c = 1) on the DCGAN.

Everything else is configs/dcgan.py's default experiment, so the two compare the loss
alone.

Variants (`--config=configs/lsgan.py:VARIANT`):
  (none)   LSGAN on `digits` at 28x28.
  tiny     a few-channel model for tests.
"""

import ml_collections


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked experiment config for `variant`."""
  config = ml_collections.ConfigDict()
  config.experiment = "gan"
  config.seed = 0

  config.data = ml_collections.ConfigDict(dict(
      name="digits",
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
      g_conditioning="none",
      d_conditioning="none",
      label_embed_dim=0,          # 0: as many as classes.
      d_norm="batch",
      g_spectral_norm=False,
      d_spectral_norm=False,
      sn_steps=1,
  ))

  config.loss = ml_collections.ConfigDict(dict(
      name="least_squares",
      gp_weight=0.0,
      r1_weight=0.0,
      aux_class_weight=1.0,
  ))

  config.optim = ml_collections.ConfigDict(dict(
      g_lr=2e-4,
      d_lr=2e-4,
      b1=0.5,
      b2=0.999,
      ema_decay=0.0,
      ema_start_step=0,
  ))

  config.train = ml_collections.ConfigDict(dict(
      batch_size=64,
      num_steps=2500,
      log_every=100,
      sample_every=500,
      num_samples=64,
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
    config.train.batch_size = 16
    config.train.num_steps = 20
    config.train.log_every = 5
    config.train.sample_every = 10
    config.train.num_samples = 16
    config.checkpoint.every = 10
    config.eval.num_samples = 64
    config.eval.batch_size = 32
  else:
    raise ValueError(f"Unknown variant {variant!r} of configs/lsgan.py; "
                     "use one of '', 'tiny'.")
  config.lock()
  return config
