"""DCGAN generator and discriminator (Radford et al., 2016) as pure Flax Linen modules.

The generator projects a latent vector to a `base x base` feature map and doubles its
resolution with 4x4 stride-2 transposed convolutions (BatchNorm + ReLU between, tanh at
the end). The discriminator mirrors it with 4x4 stride-2 convolutions and LeakyReLU,
ending in one logit per image. Supported resolutions are `base * 2**n` with `base` in
{4, 7} and n >= 2: 16, 28, 32, 56, 64, 112, 128, 256.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax.errors import ConfigError
from cnnjax.models.upsample import upsample_layer

_BASES = (4, 7)
_MAX_RESOLUTION = 256
# DCGAN's initialisation: every weight from N(0, 0.02), BatchNorm scales from N(1, 0.02).
dcgan_kernel_init = nn.initializers.normal(0.02)


def dcgan_bn_scale_init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def resolution_plan(resolution: int) -> tuple[int, int]:
  """Returns (base, num_doublings) with resolution == base * 2**num_doublings.

  Raises:
    ConfigError: if the DCGAN cannot make images of this size.
  """
  for base in _BASES:
    doublings = 0
    size = resolution
    while size % 2 == 0 and size > base:
      size //= 2
      doublings += 1
    if size == base and doublings >= 2 and resolution <= _MAX_RESOLUTION:
      return base, doublings
  raise ConfigError(
      f"DCGAN cannot make {resolution}x{resolution} images: set data.image_size to "
      "4 or 7 times a power of two, at least 16 and at most 256 (e.g. 28, 32, 64).")


class Generator(nn.Module):
  """Latent vectors (B, latent_dim) -> images (B, resolution, resolution, channels) in [-1, 1].

  Attributes:
    resolution: output height and width (see `resolution_plan`).
    channels: output channels (1 grey, 3 colour).
    width: channels before the last upsampling; earlier layers double it per level.
    upsample: name of the transposed-convolution layer (`cnnjax.models.upsample`).
    bn_momentum: BatchNorm running-average momentum.
    bn_axis_name: mapped axis over which BatchNorm averages batch statistics, so
      that data-parallel training equals training on the global batch.
    dtype: compute dtype (parameters are always float32).
  """
  resolution: int
  channels: int
  width: int = 64
  upsample: str = "fast"
  bn_momentum: float = 0.9
  bn_axis_name: str | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, latents_bz: jax.Array, *, train: bool) -> jax.Array:
    base, doublings = resolution_plan(self.resolution)
    upsample_cls = upsample_layer(self.upsample)
    norm = lambda: nn.BatchNorm(
        use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5,
        axis_name=self.bn_axis_name if train else None, dtype=self.dtype,
        scale_init=dcgan_bn_scale_init)
    features = self.width * 2 ** (doublings - 1)
    x = nn.Dense(base * base * features, use_bias=False, dtype=self.dtype,
                 kernel_init=dcgan_kernel_init)(latents_bz.astype(self.dtype))
    x = x.reshape(x.shape[0], base, base, features)
    x = nn.relu(norm()(x))
    for _ in range(doublings - 1):
      features //= 2
      x = upsample_cls(features, (4, 4), strides=(2, 2), padding="SAME",
                       use_bias=False, dtype=self.dtype,
                       kernel_init=dcgan_kernel_init)(x)
      x = nn.relu(norm()(x))
    x = upsample_cls(self.channels, (4, 4), strides=(2, 2), padding="SAME",
                     dtype=self.dtype, kernel_init=dcgan_kernel_init)(x)
    return jnp.tanh(x.astype(jnp.float32))


class Discriminator(nn.Module):
  """Images (B, resolution, resolution, channels) -> real/fake logits (B,).

  Attributes:
    resolution: input height and width (see `resolution_plan`).
    width: channels after the first convolution; each later level doubles it.
    bn_momentum: BatchNorm running-average momentum.
    bn_axis_name: mapped axis over which BatchNorm averages batch statistics.
    dtype: compute dtype (parameters are always float32).
  """
  resolution: int
  width: int = 64
  bn_momentum: float = 0.9
  bn_axis_name: str | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images_bhwc: jax.Array, *, train: bool) -> jax.Array:
    _, doublings = resolution_plan(self.resolution)
    x = images_bhwc.astype(self.dtype)
    features = self.width
    for level in range(doublings):
      x = nn.Conv(features, (4, 4), strides=(2, 2), padding="SAME",
                  use_bias=level == 0, dtype=self.dtype,
                  kernel_init=dcgan_kernel_init)(x)
      if level > 0:  # DCGAN: no BatchNorm on the discriminator's input layer.
        x = nn.BatchNorm(
            use_running_average=not train, momentum=self.bn_momentum,
            epsilon=1e-5, axis_name=self.bn_axis_name if train else None,
            dtype=self.dtype, scale_init=dcgan_bn_scale_init)(x)
      x = nn.leaky_relu(x, 0.2)
      features *= 2
    x = x.reshape(x.shape[0], -1)
    logits = nn.Dense(1, dtype=self.dtype, kernel_init=dcgan_kernel_init)(x)
    return logits[:, 0].astype(jnp.float32)
