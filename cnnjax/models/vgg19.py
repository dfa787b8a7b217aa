"""torchvision's VGG19 `features` (Simonyan & Zisserman 2015) in Flax, as a feature
extractor for style transfer.

Sixteen 3x3 convolutions (padding 1) each followed by a ReLU, in five blocks separated by
2x2 max-pools of stride 2, exactly as `torchvision.models.vgg19().features`. Layers are
named as in the style-transfer literature: `conv{b}_{i}` / `relu{b}_{i}` is the i-th
convolution of block b, `pool{b}` the pool after block b. Parameters are named after the
convolutions (`conv1_1/kernel` HWIO, `conv1_1/bias`); `vgg19_weights` maps torchvision's
`features.{index}.weight` (OIHW) onto them.

Inputs are images in [-1, 1] (the project's convention). They are mapped to [0, 1] and
normalised with ImageNet's mean and standard deviation, as torchvision's pretrained VGG19
expects (its own inputs are [0, 1] images normalised by the same numbers).
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# (block, convolutions, channels) of VGG19 (torchvision's configuration "E").
BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 4, 256), (4, 4, 512), (5, 4, 512))


def _layer_plan() -> list[tuple[str, int | None, int | None]]:
  """(name, torchvision `features` index, output channels) of every layer, in order."""
  plan, index = [], 0
  for block, convs, channels in BLOCKS:
    for i in range(1, convs + 1):
      plan.append((f"conv{block}_{i}", index, channels))
      plan.append((f"relu{block}_{i}", index + 1, channels))
      index += 2
    plan.append((f"pool{block}", index, channels))
    index += 1
  return plan


LAYERS = tuple(name for name, _, _ in _layer_plan())
# Convolution name -> (torchvision `features` index, input channels, output channels).
CONVOLUTIONS = {}
_in = 3
for _name, _index, _channels in _layer_plan():
  if _name.startswith("conv"):
    CONVOLUTIONS[_name] = (_index, _in, _channels)
    _in = _channels
del _in, _name, _index, _channels


def normalize_imagenet(images: jax.Array) -> jax.Array:
  """[-1, 1] images -> [0, 1] -> (x - ImageNet mean) / ImageNet std, per channel."""
  unit = (images + 1.0) / 2.0
  return (unit - jnp.asarray(IMAGENET_MEAN, unit.dtype)) / jnp.asarray(IMAGENET_STD,
                                                                        unit.dtype)


class VGG19Features(nn.Module):
  """VGG19's convolutional part, returning the activations of named layers.

  Attributes:
    layers: names (of `LAYERS`) whose activations are returned; the network stops after
      the deepest of them.
    precision: of the convolutions (HIGHEST: float32 on every backend, to match PyTorch).
  """
  layers: Sequence[str]
  precision: jax.lax.Precision | None = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
    """Maps (B, H, W, 3) images in [-1, 1] to {layer: (B, h, w, channels)}."""
    unknown = [name for name in self.layers if name not in LAYERS]
    if unknown or not self.layers:
      raise ValueError(f"Unknown VGG19 layers {unknown}: use names of {LAYERS}")
    last = max(LAYERS.index(name) for name in self.layers)
    x = normalize_imagenet(images.astype(jnp.float32))
    outputs = {}
    for name, _, channels in _layer_plan()[:last + 1]:
      if name.startswith("conv"):
        x = nn.Conv(channels, (3, 3), padding=((1, 1), (1, 1)), precision=self.precision,
                    name=name)(x)
      elif name.startswith("relu"):
        x = nn.relu(x)
      else:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      if name in self.layers:
        outputs[name] = x
    return outputs
