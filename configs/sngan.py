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


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked experiment config for `variant`."""
  config = ml_collections.ConfigDict()
  config.experiment = "gan"
  config.seed = 0

  config.data = ml_collections.ConfigDict(dict(
      name="digits",     # A dataset with a `label` class feature.
      data_dir="",       # "" means TFDS's default (or $TFDS_DATA_DIR).
      split="train",
      image_size=32,      # SNGAN makes 32x32 or 64x64 images.
      resize="pad",
      cache_in_memory=True,
      num_threads=4,
      prefetch=8,
  ))

  config.model = ml_collections.ConfigDict(dict(
      name="sngan",
      latent_dim=128,
      g_width=8,         # The paper: 64 (G 256 channels at 32x32).
      d_width=16,        # The paper: 64 (D 128 channels at 32x32).
      upsample="fast",
      bn_momentum=0.9,
      dtype="float32",
      g_conditioning="none",  # "cbn" with d_conditioning="projection": Miyato & Koyama.
      d_conditioning="none",
      label_embed_dim=0,          # 0: as many as classes.
      d_norm="none",
      g_spectral_norm=False,
      d_spectral_norm=True,
      sn_steps=1,
  ))

  config.loss = ml_collections.ConfigDict(dict(
      name="hinge",
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
      batch_size=32,
      num_steps=2000,
      log_every=100,
      sample_every=500,
      num_samples=100,   # A 10x10 grid (conditional: one class per row).
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
  elif variant == "projection":
    config.model.g_conditioning = "cbn"
    config.model.d_conditioning = "projection"
  elif variant == "tiny":
    config.model.g_conditioning = "cbn"
    config.model.d_conditioning = "projection"
    config.model.latent_dim = 8
    config.model.g_width = 2
    config.model.d_width = 2
    config.train.batch_size = 16
    config.train.num_steps = 20
    config.train.log_every = 5
    config.train.sample_every = 10
    config.train.num_samples = 16
    config.checkpoint.every = 10
    config.eval.num_samples = 64
    config.eval.batch_size = 32
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
  config.lock()
  return config
