"""The image transformation network of fast style transfer (Johnson, Alahi & Fei-Fei 2016,
"Perceptual losses for real-time style transfer and super-resolution").

Layout (`widths` = (w1, w2, w3), Johnson's (32, 64, 128)):

  stem        reflection pad, 9x9 convolution to w1, InstanceNorm, ReLU
  down        per further width: reflection pad 1, 3x3 stride-2 convolution, IN, ReLU
  residual    `num_residual_blocks` blocks at w3: (pad, 3x3, IN, ReLU, pad, 3x3, IN) + x
  up          per width back down: nearest-neighbour upsampling to the size the matching
              downsampling started from, reflection pad 1, 3x3 convolution, IN, ReLU
              (a resize-convolution, which avoids the checkerboards of transposed
              convolutions: Odena, Dumoulin & Olah 2016)
  out         reflection pad, 9x9 convolution to 3 channels, tanh: images in (-1, 1), the
              project's range

InstanceNorm (Ulyanov, Vedaldi & Lempitsky 2016) in place of the paper's BatchNorm: each
image is normalised alone, so a result does not depend on the other images of a batch or
on how a batch is split over devices. Every convolution but the output's has no bias (the
normalisation would remove it). Upsampling goes back to the exact sizes of the way down,
so any height and width of at least `MIN_SIZE` comes out at its own size.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

MIN_SIZE = 8   # Smallest height/width: reflection pads need the maps to be larger.


def instance_norm(name: str) -> nn.Module:
  """Per-image, per-channel normalisation with a learnt scale and shift."""
  return nn.GroupNorm(num_groups=None, group_size=1, epsilon=1e-5, name=name)


def reflect(x_bhwc: jax.Array, pad: int) -> jax.Array:
  """Reflection padding of the two spatial axes."""
  return jnp.pad(x_bhwc, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


class StyleTransformer(nn.Module):
  """Johnson et al.'s feed-forward stylisation network (see the module docstring).

  Attributes:
    widths: channels of the stem and of each downsampling level (at least one).
    num_residual_blocks: residual blocks at the narrowest resolution.
    outer_kernel: kernel size of the stem and output convolutions (odd).
  """
  widths: Sequence[int] = (32, 64, 128)
  num_residual_blocks: int = 5
  outer_kernel: int = 9

  @nn.compact
  def __call__(self, x_bhwc: jax.Array, *, train: bool = False) -> jax.Array:
    """Maps (B, H, W, 3) images in [-1, 1] to stylised (B, H, W, 3) images in (-1, 1)."""
    del train   # InstanceNorm: the same in training and inference.
    height, width = x_bhwc.shape[1:3]
    if min(height, width) < MIN_SIZE:
      raise ValueError(f"StyleTransformer needs images of at least {MIN_SIZE}x{MIN_SIZE} "
                       f"pixels, got {height}x{width}")
    pad = self.outer_kernel // 2
    h = nn.Conv(self.widths[0], (self.outer_kernel,) * 2, padding="VALID", use_bias=False,
                name="stem")(reflect(x_bhwc.astype(jnp.float32), pad))
    h = nn.relu(instance_norm("stem_norm")(h))
    sizes = []
    for level, channels in enumerate(self.widths[1:], start=1):
      sizes.append(h.shape[1:3])
      h = nn.Conv(channels, (3, 3), strides=(2, 2), padding="VALID", use_bias=False,
                  name=f"down{level}")(reflect(h, 1))
      h = nn.relu(instance_norm(f"down{level}_norm")(h))
    for block in range(self.num_residual_blocks):
      r = nn.Conv(h.shape[-1], (3, 3), padding="VALID", use_bias=False,
                  name=f"block{block}_a")(reflect(h, 1))
      r = nn.relu(instance_norm(f"block{block}_a_norm")(r))
      r = nn.Conv(h.shape[-1], (3, 3), padding="VALID", use_bias=False,
                  name=f"block{block}_b")(reflect(r, 1))
      h = h + instance_norm(f"block{block}_b_norm")(r)
    for level, channels in reversed(list(enumerate(self.widths[:-1], start=1))):
      size = sizes[level - 1]
      h = jax.image.resize(h, (h.shape[0], *size, h.shape[-1]), "nearest")
      h = nn.Conv(channels, (3, 3), padding="VALID", use_bias=False,
                  name=f"up{level}")(reflect(h, 1))
      h = nn.relu(instance_norm(f"up{level}_norm")(h))
    h = nn.Conv(3, (self.outer_kernel,) * 2, padding="VALID", name="out")(reflect(h, pad))
    return jnp.tanh(h)
