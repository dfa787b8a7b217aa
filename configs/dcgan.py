"""DCGAN on handwritten digits: the article's GAN, the project's default experiment.

Variants (`--config=configs/dcgan.py:VARIANT`):
  (none)   DCGAN on `digits` at 28x28, trained in minutes on a 2-core CPU.
  tiny     a few-channel model for tests: compiles fast, trains a handful of steps.
  shapes   DCGAN on the procedural `shapes` dataset at 32x32, 3 channels.
"""

import ml_collections


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked experiment config for `variant`."""
  config = ml_collections.ConfigDict()
  config.experiment = "gan"
  config.seed = 0

  config.data = data_config()

  config.model = ml_collections.ConfigDict(dict(
      name="dcgan",      # Backbone: "dcgan" or "sngan" (SNGAN's ResNets, 32 or 64 px).
      latent_dim=100,
      g_width=64,        # Generator channels before the last upsampling (SNGAN: base).
      d_width=64,        # Discriminator channels after the first convolution (SNGAN: base).
      upsample="fast",   # DCGAN: "fast" (cnnjax.models.upsample) or "flax" (nn.ConvTranspose).
      bn_momentum=0.9,   # Running-average momentum; 0.9 matches PyTorch's 0.1.
      dtype="float32",   # Compute dtype; parameters stay float32.
      g_conditioning="none",  # Class labels into G: "none", "concat" (the article's
                         # cGAN: a label embedding joins the latent), "cbn" (conditional BN).
      d_conditioning="none",  # Into D: "none", "concat" (one-hot label maps), "projection"
                         # (Miyato & Koyama), "acgan" (auxiliary classifier, loss.aux_class_weight).
      label_embed_dim=0,  # Size of the "concat" label embedding; 0 = the number of classes.
      d_norm="batch",    # DCGAN D after its first layer: "batch", "layer" (per example, for
                         # gradient penalties), "none". SNGAN's D has none.
      g_spectral_norm=False,  # Spectral normalisation of every G kernel.
      d_spectral_norm=False,  # ... of every D kernel (SNGAN).
      sn_steps=1,        # Power iterations per forward pass.
  ))

  config.loss = ml_collections.ConfigDict(dict(
      name="non_saturating",  # The article's L_D with non-saturating L_G; "minimax",
                         # "hinge", "wasserstein" (with gp_weight: WGAN-GP), "least_squares".
      gp_weight=0.0,     # WGAN-GP gradient penalty lambda (10 in the paper); 0 = off.
      r1_weight=0.0,     # R1 penalty gamma: gamma/2 E||grad D(x)||^2 on reals; 0 = off.
      aux_class_weight=1.0,  # AC-GAN's classification term (d_conditioning="acgan").
  ))

  config.optim = ml_collections.ConfigDict(dict(
      g_lr=2e-4,
      d_lr=2e-4,
      b1=0.5,
      b2=0.999,
      ema_decay=0.0,     # EMA of G's weights, used for grids, sampling and evaluation; 0 = off.
      ema_start_step=0,  # Before this step the EMA equals the weights.
  ))

  config.train = ml_collections.ConfigDict(dict(
      batch_size=64,     # Global batch, split over every local device.
      num_steps=2500,
      log_every=100,
      sample_every=500,
      num_samples=64,    # Images in each sample grid (a square number tiles best).
      on_nonfinite="stop",  # NaN/inf loss: "stop" with an error, or "skip" the step.
      d_steps=1,         # D updates per G update, each on batch_size / d_steps examples.
      diffaugment="",    # DiffAugment policy for everything D sees, e.g.
                         # "translation,cutout,color"; "" = off.
  ))

  config.eval = ml_collections.ConfigDict(sample_quality_fields())
  config.checkpoint = checkpoint_config()

  if variant in (None, ""):
    pass
  elif variant == "tiny":
    make_tiny(config)
  elif variant == "shapes":
    config.data.name = "shapes"
    config.data.image_size = 32
  else:
    raise ValueError(f"Unknown variant {variant!r} of configs/dcgan.py; "
                     "use one of '', 'tiny', 'shapes'.")
  config.lock()
  return config


def make_tiny(config: ml_collections.ConfigDict) -> None:
  """Shrinks a GAN config in place for tests: a few channels, a few steps.

  The recipes (configs/cgan.py, ...) build their `tiny` variants with it too.
  """
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


def data_config() -> ml_collections.ConfigDict:
  """The data section every image experiment shares (configs/vae.py too)."""
  return ml_collections.ConfigDict(dict(
      name="digits",     # TFDS name, optionally with a builder config: "shapes/tiny".
      data_dir="",       # "" means TFDS's default (or $TFDS_DATA_DIR).
      split="train",
      image_size=28,     # The model's resolution; data is padded or resized to it.
      resize="pad",      # "pad" (centre, background -1) or "resize" (bilinear).
      cache_in_memory=True,  # Decode the dataset once into RAM (small datasets).
      num_threads=4,     # grain read threads.
      prefetch=8,        # grain prefetch buffer, in batches.
  ))


def sample_quality_fields() -> dict:
  """The `eval` fields of sample-quality evaluation (`cnnjax.evaluation.evaluate`,
  `run.py evaluate`), shared by every generative model's config."""
  return dict(
      every=0,           # Steps between sample-quality evaluations (and the last step);
                         # 0 = none. Needs extractor_workdir. Logged with the losses.
      extractor_workdir="",  # A trained classifier run (configs/classifier.py) whose
                         # features and logits score the samples.
      reference_split="test",  # The real split samples are compared with.
      num_samples=5000,  # Samples per evaluation (`run.py evaluate --num_samples`).
      batch_size=500,    # Samples generated and scored per device call.
      max_reference_features=10000,  # Raw real features kept for KID and PRDC.
      reference_cache_dir="",  # Cached reference statistics; "" = <data_dir>/cnnjax_reference.
  )


def checkpoint_config() -> ml_collections.ConfigDict:
  """The checkpoint section every training experiment shares."""
  return ml_collections.ConfigDict(dict(
      every=500,         # Steps between checkpoints (and one at the end).
      keep=3,            # Newest checkpoints kept.
      best_metric="",    # Also keep the best checkpoint by this logged metric ("fid").
      best_mode="min",   # "min" or "max" for best_metric.
      async_save=True,   # Write in the background while training continues.
  ))
