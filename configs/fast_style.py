"""Fast feed-forward style transfer (Johnson, Alahi & Fei-Fei 2016): a transformation
network trained per style image on a content dataset, then applied in one forward pass.

  python run.py --config=configs/fast_style.py --workdir=workdirs/fast_style_coffee
  python run.py stylize --workdir=workdirs/fast_style_coffee \
      --content=skimage:chelsea,photo.jpg --out=DIR

The loss is Gatys et al.'s (`cnnjax.losses.style.perceptual_terms`, on a feature network
of `cnnjax.models.style_features`): content on `features.content_layer`, Gram matrices of
`features.style_layers` against the style image's, total variation; each term's weight is
in `loss`. `run.py stylize --workdir` reports the same terms for its results.

Variants (`--config=configs/fast_style.py:VARIANT`):
  ''     (the default) `photo_crops` at 64 px, a narrow network (16, 32, 64 channels,
         three residual blocks), 1,500 steps of batch 4: about 2 minutes on a 2-core CPU.
  tiny   `photo_crops/tiny` at 16 px, 4/8/8 channels, one residual block, 4 steps: for
         tests.
Johnson et al.'s own settings (widths 32/64/128, five residual blocks, 256 px, 40,000
steps of batch 4) are overrides for a GPU: see README's "Style transfer".
"""

import ml_collections


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked fast style transfer config for `variant`."""
  config = ml_collections.ConfigDict()
  config.experiment = "fast_style"
  config.seed = 0                # Init, flips (fold_in with the step), random features.
  config.style_image = "skimage:coffee"   # A file path or skimage:NAME.
  config.style_size = 64         # The style image's side (resized, centre-cropped).

  config.data = ml_collections.ConfigDict(dict(
      name="photo_crops",        # Any prepared TFDS dataset with an `image` feature.
      data_dir="",               # "" means TFDS's default (or $TFDS_DATA_DIR).
      split="train",
      test_split="test",         # The fixed images of the sample grids.
      image_size=64,             # Training crops are resized to this.
      resize="resize",           # "pad" or "resize" (bilinear).
      flip=True,                 # Random left-right mirror per example.
      num_threads=2,
      prefetch=4,
      cache_in_memory=True,
  ))

  config.model = ml_collections.ConfigDict(dict(
      widths=(16, 32, 64),       # Stem, then each stride-2 level (Johnson: 32, 64, 128).
      num_residual_blocks=3,     # At the narrowest level (Johnson: 5).
      outer_kernel=9,            # Stem and output convolutions (odd).
  ))

  config.features = ml_collections.ConfigDict(dict(
      network="random",          # "random" (no download) or "vgg19" (weights_path).
      weights_path="",           # vgg19: torchvision's vgg19-dcbb9e9d.pth (or .npz).
      converted_path="",         # vgg19: its .npz cache; "" = beside weights_path.
      normalize="content",       # "content": each layer / its mean |activation| on the
                                 # content image; "none": raw activations.
      content_layer="relu2_2",   # Johnson et al.'s content layer.
      style_layers=("relu1_1", "relu2_1", "relu3_1", "relu4_1"),
      style_layer_weights=(1.0, 1.0, 1.0, 1.0),
  ))

  config.loss = ml_collections.ConfigDict(dict(
      content_weight=1.0,        # MSE of content_layer's (normalised) activations.
      style_weight=1000.0,       # Sum over style_layers of weight * Gram MSE (as
                                 # configs/style_transfer.py).
      tv_weight=1.0,             # Mean squared neighbour difference of the pixels.
  ))

  config.optim = ml_collections.ConfigDict(dict(
      lr=1e-3, b1=0.9, b2=0.999,  # Adam (Johnson et al.: 1e-3).
  ))

  config.train = ml_collections.ConfigDict(dict(
      batch_size=4,              # Global batch over every device.
      num_steps=1500,
      log_every=50,
      sample_every=500,          # Grids of content | stylised on fixed test images.
      on_nonfinite="stop",
  ))

  config.eval = ml_collections.ConfigDict(dict(
      num_grid=4,                # Test images in the grids.
  ))

  config.checkpoint = ml_collections.ConfigDict(dict(
      every=500, keep=2, best_metric="", best_mode="min", async_save=True))

  if variant in (None, ""):
    pass
  elif variant == "tiny":
    config.style_size = 16
    config.data.name = "photo_crops/tiny"
    config.data.image_size = 16
    config.model.widths = (4, 8, 8)
    config.model.num_residual_blocks = 1
    config.model.outer_kernel = 5
    config.features.content_layer = "relu2_1"
    config.features.style_layers = ("relu1_1", "relu2_1", "relu3_1")
    config.features.style_layer_weights = (1.0, 1.0, 1.0)
    config.train.batch_size = 8
    config.train.num_steps = 4
    config.train.log_every = 2
    config.train.sample_every = 4
    config.eval.num_grid = 2
    config.checkpoint.every = 2
    config.checkpoint.async_save = False
  else:
    raise ValueError(f"Unknown variant {variant!r} of configs/fast_style.py; use one of "
                     "'', 'tiny'.")
  config.lock()
  return config
