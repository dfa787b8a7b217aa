"""An in-domain CNN classifier: the feature extractor of FID/KID/PRDC and the judge of IS.

Train one per dataset, then point a GAN run's `eval.extractor_workdir` at its workdir:
  python run.py --config=configs/classifier.py:digits --workdir=workdirs/classifier_digits

Variants (`--config=configs/classifier.py:VARIANT`):
  digits   (the default) `digits` at 28x28, grey; about two minutes on a 2-core CPU.
  shapes   the procedural `shapes` dataset at 32x32, RGB.
  tiny     a few-channel model for tests: compiles fast, trains a handful of steps.
"""

import ml_collections


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked classifier config for `variant`."""
  config = ml_collections.ConfigDict()
  config.experiment = "classifier"
  config.seed = 0

  config.data = ml_collections.ConfigDict(dict(
      name="digits",     # TFDS name with a `label` ClassLabel and an `image` feature.
      data_dir="",       # "" means TFDS's default (or $TFDS_DATA_DIR).
      split="train",     # Split trained on.
      test_split="test",  # Split whose accuracy is reported in eval.json at the end.
      image_size=28,     # The classifier's resolution; data is padded or resized to it.
      resize="pad",      # "pad" (centre, background -1) or "resize" (bilinear).
      max_shift=2,       # Augmentation: random translation by up to this many pixels.
      cache_in_memory=True,  # Decode the dataset once into RAM (small datasets).
      num_threads=4,     # grain read threads.
      prefetch=8,        # grain prefetch buffer, in batches.
  ))

  config.model = ml_collections.ConfigDict(dict(
      name="cnn",
      widths=(16, 32, 64),   # Conv channels of each level (2x2 max pooling between).
      convs_per_level=2,     # conv-BN-ReLU blocks per level.
      feature_dim=128,       # Penultimate features: what FID, KID and PRDC compare.
      bn_momentum=0.9,
      dtype="float32",
  ))

  config.optim = ml_collections.ConfigDict(dict(
      lr=3e-3,           # Peak AdamW learning rate (cosine decay over train.num_steps).
      warmup_steps=50,
      weight_decay=1e-4,
  ))

  config.train = ml_collections.ConfigDict(dict(
      batch_size=128,    # Global batch, split over every local device.
      num_steps=600,
      log_every=50,
      sample_every=1000,  # The runtime's grid period; a classifier writes no grids.
      eval_batch_size=256,  # Test-split batch (padded at the end), over every device.
      on_nonfinite="stop",  # NaN/inf loss: "stop" with an error, or "skip" the step.
  ))

  config.checkpoint = ml_collections.ConfigDict(dict(
      every=200,         # Steps between checkpoints (and one at the end).
      keep=2,            # Newest checkpoints kept.
      best_metric="",    # Also keep the best checkpoint by this logged metric.
      best_mode="max",   # "min" or "max" for best_metric.
      async_save=True,   # Write in the background while training continues.
  ))

  if variant in (None, "", "digits"):
    pass
  elif variant == "shapes":
    config.data.name = "shapes"
    config.data.image_size = 32
  elif variant == "tiny":
    config.data.max_shift = 1
    config.model.widths = (4, 8)
    config.model.convs_per_level = 1
    config.model.feature_dim = 8
    config.optim.warmup_steps = 2
    config.train.batch_size = 16
    config.train.num_steps = 6
    config.train.log_every = 3
    config.train.sample_every = 3
    config.train.eval_batch_size = 64
    config.checkpoint.every = 3
  else:
    raise ValueError(f"Unknown variant {variant!r} of configs/classifier.py; "
                     "use one of 'digits', 'shapes', 'tiny'.")
  config.lock()
  return config
