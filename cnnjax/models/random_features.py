"""Random-weight multi-scale convolutional features: style transfer with no download.

Ustyuzhaninov et al. (2017, "What does it take to generate natural textures?") showed
that Gram-matrix texture synthesis works with untrained convolutional networks when
their features span several scales, and He, Wang & Hopcroft (2016, "A powerful
generative model using random weights for the deep image representation") that a
VGG-shaped network with random, properly scaled weights supports style transfer. This
network follows both: VGG's layout (blocks of 3x3 convolutions with ReLUs, 2x2 average
pools between blocks, so block b sees structures 2^(b-1) times larger than block 1) with
He-normal weights (variance 2 / fan-in, which keeps the activations' magnitude roughly
constant from layer to layer) and zero biases, drawn from a key the caller derives from
the config seed (`random_params`). Layers carry VGG19's names (`relu{b}_{i}`,
`conv{b}_{i}`, `pool{b}`), so a style-transfer config's layer lists work for both
networks.

Per-layer normalisation, so that layer weights mean something: the Gatys objective
(`cnnjax.style.gatys`, config `features.normalize="content"`) divides every layer's
activations by their mean magnitude on the content image (a constant per layer and
image). Each layer's normalised content activations then have mean magnitude 1 and
their Gram matrices entries of order 1, whatever the network, layer depth or weights.

Inputs are images in [-1, 1], used as they are (no ImageNet normalisation: the weights
never saw ImageNet).
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# (convolutions, channels) of each block: five scales, like VGG19's blocks but narrower.
DEFAULT_BLOCKS = ((2, 32), (2, 64), (2, 128), (2, 256), (2, 256))


def layer_names(blocks: Sequence[tuple[int, int]] = DEFAULT_BLOCKS) -> tuple[str, ...]:
  """Every layer's name, in order: conv{b}_{i}, relu{b}_{i}, ..., pool{b}."""
  names = []
  for block, (convs, _) in enumerate(blocks, start=1):
    for i in range(1, convs + 1):
      names += [f"conv{block}_{i}", f"relu{block}_{i}"]
    names.append(f"pool{block}")
  return tuple(names)


class RandomFeatures(nn.Module):
  """A VGG-shaped network of random 3x3 convolutions, returning named activations.

  Attributes:
    layers: names (of `layer_names(blocks)`) whose activations are returned; the network
      stops after the deepest of them.
    blocks: (convolutions, channels) per scale.
    precision: of the convolutions.
  """
  layers: Sequence[str]
  blocks: Sequence[tuple[int, int]] = DEFAULT_BLOCKS
  precision: jax.lax.Precision | None = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
    """Maps (B, H, W, 3) images in [-1, 1] to {layer: (B, h, w, channels)}."""
    names = layer_names(self.blocks)
    unknown = [name for name in self.layers if name not in names]
    if unknown or not self.layers:
      raise ValueError(f"Unknown random-feature layers {unknown}: use names of {names}")
    last = max(names.index(name) for name in self.layers)
    x = images.astype(jnp.float32)
    outputs = {}
    for name in names[:last + 1]:
      if name.startswith("conv"):
        block = int(name[4:].split("_")[0])
        x = nn.Conv(self.blocks[block - 1][1], (3, 3), padding="SAME",
                    kernel_init=nn.initializers.he_normal(),
                    bias_init=nn.initializers.zeros, precision=self.precision,
                    name=name)(x)
      elif name.startswith("relu"):
        x = nn.relu(x)
      else:
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
      if name in self.layers:
        outputs[name] = x
    return outputs


def random_params(model: RandomFeatures, key: jax.Array) -> dict:
  """The network's random variables, drawn from `key` (one draw per seed).

  The weights depend only on `key` and the layer shapes, not on any image size.
  """
  size = 2 ** len(model.blocks)
  return jax.jit(model.init)(key, jnp.zeros((1, size, size, 3), jnp.float32))
