"""Image-to-image translation networks: pix2pix's U-Net generator, the PatchGAN
discriminator (both Isola et al. 2017) and CycleGAN's ResNet generator (Zhu et al. 2017).

Normalisation is InstanceNorm (pix2pix's BatchNorm at batch size 1, its reference
setting, is the same operation), so each example is translated independently and the
numbers do not depend on how a batch is split over devices.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax.models.upsample import FastConvTranspose

_PAD1 = ((1, 1), (1, 1))
PATCH_KERNEL = 4


def instance_norm(name: str) -> nn.Module:
  return nn.GroupNorm(num_groups=None, group_size=1, epsilon=1e-5, name=name)


def unet_widths(image_size: int, base: int, maximum: int) -> tuple[int, ...]:
  """Channels of each U-Net encoder level: base, 2 base, ... capped at `maximum`, down to
  a 1x1 bottleneck (8 levels at 256 px, as in pix2pix's `unet_256`)."""
  num_downs = image_size.bit_length() - 1
  return tuple(min(base * 2**level, maximum) for level in range(num_downs))


class UNetGenerator(nn.Module):
  """pix2pix's U-Net: 4x4 stride-2 convolutions down to 1x1, transposed ones back up,
  each decoder level concatenated with the encoder level of its resolution.

  Attributes:
    widths: encoder channels per level (`unet_widths`); the image side is 2**len(widths).
    out_channels: output image channels (tanh).
    dropout_rate: dropout after the decoder levels `1..num_dropout` counted from the
      innermost (pix2pix: 0.5 on three levels); the generator's only noise.
    num_dropout: see above.
  """
  widths: Sequence[int]
  out_channels: int = 3
  dropout_rate: float = 0.5
  num_dropout: int = 3

  @nn.compact
  def __call__(self, x_bhwc: jax.Array, *, train: bool, dropout: bool | None = None
               ) -> jax.Array:
    """Translates (b, H, W, C_in) in [-1, 1] to (b, H, W, out_channels) in [-1, 1].

    `dropout` (default: `train`) turns the decoder's dropout on, which needs a `dropout`
    rng; pix2pix keeps it on at test time.
    """
    dropout = train if dropout is None else dropout
    num_levels = len(self.widths)
    skips = []
    h = x_bhwc
    for level, width in enumerate(self.widths):
      if level:
        h = nn.leaky_relu(h, 0.2)
      normed = 0 < level < num_levels - 1
      # No bias before InstanceNorm, which would remove it (its gradient is rounding).
      h = nn.Conv(width, (4, 4), strides=(2, 2), padding=_PAD1, use_bias=not normed,
                  name=f"down{level}")(h)
      if normed:
        h = instance_norm(f"down{level}_norm")(h)
      skips.append(h)
    for level in reversed(range(num_levels)):
      if level < num_levels - 1:
        h = jnp.concatenate([h, skips[level]], axis=-1)
      h = nn.relu(h)
      width = self.widths[level - 1] if level else self.out_channels
      h = FastConvTranspose(width, (4, 4), strides=(2, 2), padding="SAME",
                            use_bias=level == 0, name=f"up{level}")(h)
      if level:
        h = instance_norm(f"up{level}_norm")(h)
        if 1 <= num_levels - 1 - level <= self.num_dropout and self.dropout_rate > 0:
          h = nn.Dropout(self.dropout_rate, deterministic=not dropout)(h)
    return jnp.tanh(h)


def patchgan_receptive_field(num_layers: int, kernel: int = PATCH_KERNEL) -> int:
  """The side (input pixels) one PatchGAN output sees: 70 for 3 layers (pix2pix's
  default), 16 for 1 (`PixelGAN` aside), 34 for 2, 142 for 4.

  The network is `num_layers` stride-2 convolutions, one stride-1 convolution and the
  stride-1 output convolution, all `kernel` x `kernel`.
  """
  layers = [(kernel, 2)] * num_layers + [(kernel, 1), (kernel, 1)]
  field = 1
  for size, stride in reversed(layers):
    field = (field - 1) * stride + size
  return field


class PatchGAN(nn.Module):
  """pix2pix's PatchGAN: one real/fake logit per overlapping patch.

  Attributes:
    base_width: channels of the first convolution (64 in pix2pix), doubled per layer.
    num_layers: stride-2 layers (3: 70x70 patches; see `patchgan_receptive_field`).
    max_width: channel cap (512).
    use_norm: InstanceNorm after every convolution but the first (pix2pix); without
      it each logit depends only on its receptive field (InstanceNorm's statistics
      span the whole image).
  """
  base_width: int = 64
  num_layers: int = 3
  max_width: int = 512
  use_norm: bool = True

  @nn.compact
  def __call__(self, x_bhwc: jax.Array, *, train: bool) -> jax.Array:
    """(b, H, W, C) (for pix2pix the input and the output, concatenated) -> logits
    (b, H', W', 1)."""
    del train  # InstanceNorm: the same in training and evaluation.
    h = x_bhwc
    for layer in range(self.num_layers + 1):
      stride = 2 if layer < self.num_layers else 1
      width = min(self.base_width * 2**layer, self.max_width)
      normed = layer > 0 and self.use_norm
      h = nn.Conv(width, (PATCH_KERNEL, PATCH_KERNEL), strides=(stride, stride),
                  padding=_PAD1, use_bias=not normed, name=f"conv{layer}")(h)
      if normed:
        h = instance_norm(f"norm{layer}")(h)
      h = nn.leaky_relu(h, 0.2)
    return nn.Conv(1, (PATCH_KERNEL, PATCH_KERNEL), padding=_PAD1, name="logits")(h)


def _reflect(x_bhwc: jax.Array, pad: int) -> jax.Array:
  return jnp.pad(x_bhwc, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


class ResnetGenerator(nn.Module):
  """CycleGAN's generator: reflection-padded 7x7 convolution, two stride-2 downsamplings,
  `num_blocks` residual blocks (reflection padding, InstanceNorm), two upsamplings and a
  reflection-padded 7x7 output convolution with tanh.

  Attributes:
    base_width: channels of the first convolution (64), doubled by each downsampling.
    num_blocks: residual blocks (9 at 256 px, 6 at 128 px in CycleGAN).
    out_channels: output image channels.
  """
  base_width: int = 64
  num_blocks: int = 9
  out_channels: int = 3

  @nn.compact
  def __call__(self, x_bhwc: jax.Array, *, train: bool) -> jax.Array:
    del train
    h = nn.Conv(self.base_width, (7, 7), padding="VALID", use_bias=False,
                name="stem")(_reflect(x_bhwc, 3))
    h = nn.relu(instance_norm("stem_norm")(h))
    for index in range(2):
      h = nn.Conv(self.base_width * 2**(index + 1), (3, 3), strides=(2, 2),
                  padding=_PAD1, use_bias=False, name=f"down{index}")(h)
      h = nn.relu(instance_norm(f"down{index}_norm")(h))
    width = self.base_width * 4
    for block in range(self.num_blocks):
      r = nn.Conv(width, (3, 3), padding="VALID", use_bias=False,
                  name=f"block{block}_a")(_reflect(h, 1))
      r = nn.relu(instance_norm(f"block{block}_a_norm")(r))
      r = nn.Conv(width, (3, 3), padding="VALID", use_bias=False,
                  name=f"block{block}_b")(_reflect(r, 1))
      h = h + instance_norm(f"block{block}_b_norm")(r)
    for index in range(2):
      h = FastConvTranspose(self.base_width * 2**(1 - index), (3, 3), strides=(2, 2),
                            padding="SAME", use_bias=False, name=f"up{index}")(h)
      h = nn.relu(instance_norm(f"up{index}_norm")(h))
    h = nn.Conv(self.out_channels, (7, 7), padding="VALID", name="out")(_reflect(h, 3))
    return jnp.tanh(h)
