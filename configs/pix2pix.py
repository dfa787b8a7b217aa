"""pix2pix (Isola et al. 2017): paired image-to-image translation with a U-Net generator
and a PatchGAN discriminator on (input, output) pairs.

  python run.py --config=configs/pix2pix.py --workdir=workdirs/pix2pix_shapes

Variants (`--config=configs/pix2pix.py:VARIANT`):
  shapes   (the default) `shape_pairs`: outline -> filled shape, 32 px.
  l1       the same with lambda_gan = 0 (L1 only; the paper's Table 1 ablation).
  cgan     the same with lambda_l1 = 0 (cGAN only).
  tiny     `shape_pairs/tiny` at 16 px, few channels: for tests.
Any prepared TFDS dataset with two image features works: set data.name,
data.source_feature and data.target_feature.
"""

import ml_collections


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked pix2pix config for `variant`."""
  config = ml_collections.ConfigDict()
  config.experiment = "pix2pix"
  config.seed = 0

  config.data = ml_collections.ConfigDict(dict(
      name="shape_pairs",        # A TFDS dataset with two image features.
      data_dir="",               # "" means TFDS's default (or $TFDS_DATA_DIR).
      split="train",
      test_split="test",         # Metrics, grids and `run.py translate --split`.
      source_feature="outline",  # The translation's input.
      target_feature="image",    # Its ground truth.
      image_size=32,             # Power of two; images are padded or resized to it.
      resize="resize",           # "pad" or "resize" (bilinear).
      jitter=True,               # pix2pix's random jitter (same for both images).
      load_size=36,              # Resize to this, then random-crop back (286 for 256).
      flip=True,                 # Random left-right mirror (same for both images).
      num_threads=2,
      prefetch=4,
  ))

  config.model = ml_collections.ConfigDict(dict(
      g_width=32,                # U-Net: channels of the first level (64 in the paper).
      g_max_width=256,           # Channel cap (512).
      dropout_rate=0.5,          # Dropout in the decoder (the generator's only noise).
      num_dropout=3,             # Decoder levels with dropout after the innermost.
      dropout_at_test=True,      # Keep dropout on at test time (the reference code does).
      d_width=32,                # PatchGAN channels of the first layer (64).
      d_max_width=256,           # (512)
      d_num_layers=2,            # Stride-2 layers: 3 = 70x70 patches (for 256 px), 2 = 34.
  ))

  config.loss = ml_collections.ConfigDict(dict(
      gan="vanilla",             # "vanilla" (cross-entropy) or "lsgan" (least squares).
      lambda_gan=1.0,            # Weight of the cGAN term in G's loss (0: L1 only).
      lambda_l1=100.0,           # Weight of the L1 term (0: cGAN only).
  ))

  config.optim = ml_collections.ConfigDict(dict(
      lr=2e-4, b1=0.5, b2=0.999,  # Adam, for G and D.
      constant_steps=750,        # Constant rate for these steps (pix2pix's n_epochs),
      decay_steps=750,           # then linear to 0 over these (n_epochs_decay).
  ))

  config.train = ml_collections.ConfigDict(dict(
      batch_size=16,             # Global batch over every device.
      num_steps=1500,
      log_every=50,
      sample_every=250,          # Grids of input | output | target on fixed test pairs.
      on_nonfinite="stop",
  ))

  config.eval = ml_collections.ConfigDict(dict(
      every=0,                   # Test-split metrics every N steps (0: only at the end).
      at_end=True,               # Score the test split into eval.json when training ends.
      num_examples=0,            # Test pairs scored (0: the whole split).
      extractor_workdir="",      # Classifier on the target domain: FID, KID, task score.
      batch_size=64,             # Images per translation call.
      num_grid=8,                # Test pairs in the grids.
  ))

  config.checkpoint = ml_collections.ConfigDict(dict(
      every=500, keep=2, best_metric="", best_mode="min", async_save=True))

  if variant in (None, "", "shapes"):
    pass
  elif variant == "l1":
    config.loss.lambda_gan = 0.0
  elif variant == "cgan":
    config.loss.lambda_l1 = 0.0
  elif variant == "tiny":
    config.data.name = "shape_pairs/tiny"
    config.data.image_size = 16
    config.data.load_size = 18
    config.model.g_width = 4
    config.model.g_max_width = 8
    config.model.d_width = 4
    config.model.d_max_width = 8
    config.model.d_num_layers = 1
    config.train.batch_size = 8
    config.train.num_steps = 4
    config.train.log_every = 2
    config.train.sample_every = 4
    config.optim.constant_steps = 2
    config.optim.decay_steps = 2
    config.eval.batch_size = 8
    config.eval.num_examples = 16
    config.eval.num_grid = 4
    config.checkpoint.every = 2
    config.checkpoint.async_save = False
  else:
    raise ValueError(f"Unknown pix2pix variant {variant!r}: use shapes, l1, cgan or tiny.")
  config.lock()
  return config
