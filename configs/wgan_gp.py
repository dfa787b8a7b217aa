"""WGAN-GP (Gulrajani et al. 2017): the Wasserstein critic with a gradient penalty.

The DCGAN backbone with LayerNorm in the critic in place of BatchNorm (the penalty needs
every example's own input gradient), lambda = 10, five critic updates per generator
update and Adam(1e-4, 0, 0.9), as in the paper. `train.batch_size` is the real images of
one generator step: each critic update sees a fifth of them (64), as the paper's batch.
The critic is half DCGAN's width: double back-propagation through it is what costs most
on a CPU.

Variants (`--config=configs/wgan_gp.py:VARIANT`):
  (none)   unconditional WGAN-GP on `digits` at 28x28.
  tiny     a few-channel model for tests (two critic updates per step).
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
      d_width=32,
      upsample="fast",
      bn_momentum=0.9,
      dtype="float32",
      g_conditioning="none",
      d_conditioning="none",
      label_embed_dim=0,          # 0: as many as classes.
      d_norm="layer",    # Per-example: the penalty needs it.
      g_spectral_norm=False,
      d_spectral_norm=False,
      sn_steps=1,
  ))

  config.loss = ml_collections.ConfigDict(dict(
      name="wasserstein",
      gp_weight=10.0,
      r1_weight=0.0,
      aux_class_weight=1.0,
  ))

  config.optim = ml_collections.ConfigDict(dict(
      g_lr=1e-4,
      d_lr=1e-4,
      b1=0.0,
      b2=0.9,
      ema_decay=0.0,
      ema_start_step=0,
  ))

  config.train = ml_collections.ConfigDict(dict(
      batch_size=320,    # 5 critic updates x 64.
      num_steps=1500,
      log_every=100,
      sample_every=500,
      num_samples=64,
      on_nonfinite="stop",
      d_steps=5,
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
    config.train.batch_size = 32
    config.train.num_steps = 20
    config.train.log_every = 5
    config.train.sample_every = 10
    config.train.num_samples = 16
    config.train.d_steps = 2
    config.checkpoint.every = 10
    config.eval.num_samples = 64
    config.eval.batch_size = 32
  else:
    raise ValueError(f"Unknown variant {variant!r} of configs/wgan_gp.py; "
                     "use one of '', 'tiny'.")
  config.lock()
  return config
