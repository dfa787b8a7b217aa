"""The factor model of `shapes`: class and ground-truth factors (x, y, scale, rotation,
hue) from an image; the judge of attribute edits (`python run.py attributes`).

  python run.py --config=configs/factors.py --workdir=workdirs/factors_shapes

Variants (`--config=configs/factors.py:VARIANT`):
  shapes   (the default) `shapes` at 32x32, RGB.
  tiny     a few-channel model on `shapes/tiny` for tests: a handful of steps.
"""

import ml_collections


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked factors config for `variant`."""
  config = ml_collections.ConfigDict()
  config.experiment = "factors"
  config.seed = 0

  config.data = ml_collections.ConfigDict(dict(
      name="shapes",     # A dataset with shapes' `factors` feature.
      data_dir="",       # "" means TFDS's default (or $TFDS_DATA_DIR).
      split="train",
      test_split="test",  # Scored into eval.json at the end.
      image_size=32,
      resize="pad",      # "pad" or "resize".
      max_shift=0,       # Random translation (x, y targets move with it).
      cache_in_memory=True,  # Always: the split is read once with its factors.
      num_threads=4,
      prefetch=8,
  ))

  config.model = ml_collections.ConfigDict(dict(
      name="cnn",        # The classifier's trunk (cnnjax/models/classifier.py).
      widths=(32, 64, 128),
      convs_per_level=2,
      feature_dim=128,
      bn_momentum=0.9,
      dtype="float32",
  ))

  config.loss = ml_collections.ConfigDict(dict(
      factor_weight=1.0,  # Weight of the factor targets' squared error vs the class loss.
  ))

  config.optim = ml_collections.ConfigDict(dict(
      lr=3e-3,
      warmup_steps=50,
      weight_decay=1e-4,
  ))

  config.train = ml_collections.ConfigDict(dict(
      batch_size=128,
      num_steps=1500,
      log_every=50,
      sample_every=1000,
      eval_batch_size=256,
      on_nonfinite="stop",
  ))

  config.checkpoint = ml_collections.ConfigDict(dict(
      every=500,
      keep=2,
      best_metric="",
      best_mode="max",
      async_save=True,
  ))

  if variant in (None, "", "shapes"):
    pass
  elif variant == "tiny":
    config.data.name = "shapes/tiny"
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
    raise ValueError(f"Unknown variant {variant!r} of configs/factors.py; "
                     "use one of 'shapes', 'tiny'.")
  config.lock()
  return config
