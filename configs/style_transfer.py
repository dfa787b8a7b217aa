"""Neural style transfer by optimisation (Gatys et al. 2016), for `run.py stylize`.

  python run.py stylize --content=skimage:astronaut --style=skimage:coffee --out=DIR
  python run.py stylize --content=A.png,B.jpg --style=S.png --out=DIR \
      --config=configs/style_transfer.py --config.features.network=vgg19 \
      --config.features.weights_path=/data/vgg19-dcbb9e9d.pth

This is not a training kind: the config only parametrises the optimisation of pixels.

Variants (`--config=configs/style_transfer.py:VARIANT`):
  ''     (the default) 128x128, random-weight features, 100 L-BFGS steps.
  tiny   32x32, four steps, style and content layers down to relu3_1 (a shallower
         network compiles twice as fast): for tests.
"""

import ml_collections


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked style-transfer config for `variant`."""
  config = ml_collections.ConfigDict()
  config.experiment = "style_transfer"
  config.seed = 0                # Random features' weights, noise inits (fold_in per use).
  config.image_size = 128        # Images are resized (shorter side) and centre-cropped.

  config.features = ml_collections.ConfigDict(dict(
      network="random",          # "random" (no download) or "vgg19" (weights_path).
      weights_path="",           # vgg19: torchvision's vgg19-dcbb9e9d.pth (or .npz).
      converted_path="",         # vgg19: its .npz cache; "" = beside weights_path.
      normalize="content",       # "content": each layer / its mean |activation| on the
                                 # content image; "none": raw activations.
      content_layer="relu4_2",
      style_layers=("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
      style_layer_weights=(1.0, 1.0, 1.0, 1.0, 1.0),
  ))

  config.loss = ml_collections.ConfigDict(dict(
      content_weight=1.0,        # MSE of content_layer's (normalised) activations.
      style_weight=1000.0,       # Sum over style_layers of weight * Gram MSE.
      tv_weight=0.1,             # Mean squared neighbour difference of the pixels.
  ))

  config.optimizer = ml_collections.ConfigDict(dict(
      name="lbfgs",              # "lbfgs" (optax, zoom line search) or "adam".
      steps=100,
      learning_rate=0.05,        # adam only (L-BFGS's step comes from its line search).
  ))

  config.init = "content"        # "content" or "noise" (seeded per image).

  if variant in (None, ""):
    pass
  elif variant == "tiny":
    config.image_size = 32
    config.optimizer.steps = 4
    config.features.content_layer = "relu3_1"
    config.features.style_layers = ("relu1_1", "relu2_1", "relu3_1")
    config.features.style_layer_weights = (1.0, 1.0, 1.0)
  else:
    raise ValueError(f"Unknown variant {variant!r} of configs/style_transfer.py; use one "
                     "of '', 'tiny'.")
  config.lock()
  return config
