"""DCGAN generator and discriminator (Radford et al., 2016) as pure Flax Linen modules.

The generator projects a latent vector to a `base x base` feature map and doubles its
resolution with 4x4 stride-2 transposed convolutions (BatchNorm + ReLU between, tanh at
the end). The discriminator mirrors it with 4x4 stride-2 convolutions and LeakyReLU,
ending in one logit per image. Supported resolutions are `base * 2**n` with `base` in
{4, 7} and n >= 2: 16, 28, 32, 56, 64, 112, 128, 256.

For the GAN family's ablations, the discriminator's normalisation after its first layer
is a choice (`DISCRIMINATOR_NORMS`: DCGAN's BatchNorm; the per-example LayerNorm of
WGAN-GP's critic, whose gradient penalty needs examples treated independently; none),
and either network can be spectrally normalised (`cnnjax.models.spectral_norm`). The
defaults are the DCGAN of the paper, with unchanged parameter paths.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax.errors import ConfigError
from cnnjax.models.fast_conv import strided_conv
from cnnjax.models.spectral_norm import spectral_normalized
from cnnjax.models.upsample import upsample_layer

_BASES = (4, 7)
DISCRIMINATOR_NORMS = ("batch", "layer", "none")
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
    spectral_norm: spectrally normalise the projection and every upsampling kernel.
    sn_steps: power iterations per call.
    dtype: compute dtype (parameters are always float32).
  """
  resolution: int
  channels: int
  width: int = 64
  upsample: str = "fast"
  bn_momentum: float = 0.9
  bn_axis_name: str | None = None
  spectral_norm: bool = False
  sn_steps: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, latents_bz: jax.Array, *, train: bool) -> jax.Array:
    base, doublings = resolution_plan(self.resolution)
    upsample_cls = upsample_layer(self.upsample)
    norm = lambda: nn.BatchNorm(
        use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5,
        axis_name=self.bn_axis_name if train else None, dtype=self.dtype,
        scale_init=dcgan_bn_scale_init)
    normalized = lambda layer: spectral_normalized(
        layer, enabled=self.spectral_norm, update_stats=train, n_steps=self.sn_steps)
    features = self.width * 2 ** (doublings - 1)
    x = normalized(nn.Dense(base * base * features, use_bias=False, dtype=self.dtype,
                            kernel_init=dcgan_kernel_init))(latents_bz.astype(self.dtype))
    x = x.reshape(x.shape[0], base, base, features)
    x = nn.relu(norm()(x))
    for _ in range(doublings - 1):
      features //= 2
      x = normalized(upsample_cls(features, (4, 4), strides=(2, 2), padding="SAME",
                                  use_bias=False, dtype=self.dtype,
                                  kernel_init=dcgan_kernel_init))(x)
      x = nn.relu(norm()(x))
    x = normalized(upsample_cls(self.channels, (4, 4), strides=(2, 2), padding="SAME",
                                dtype=self.dtype, kernel_init=dcgan_kernel_init))(x)
    return jnp.tanh(x.astype(jnp.float32))


def discriminator_features(module: nn.Module, images_bhwc: jax.Array,
                           train: bool) -> jax.Array:
  """DCGAN's strided 4x4 convolutions with LeakyReLU: images -> flat features (B, F).

  Call it inside a compact `__call__` of `module`, which provides `resolution`, `width`,
  `norm`, `bn_momentum`, `bn_axis_name`, `spectral_norm`, `sn_steps` and `dtype` (as
  `Discriminator`); the layers are created there (`Conv_<i>`, `BatchNorm_<i>` or
  `LayerNorm_<i>`), so every discriminator built on these features has the same paths.
  """
  if module.norm not in DISCRIMINATOR_NORMS:
    raise ConfigError(f"Unknown model.d_norm {module.norm!r}: use one of "
                      f"{', '.join(DISCRIMINATOR_NORMS)}.")
  _, doublings = resolution_plan(module.resolution)
  x = images_bhwc.astype(module.dtype)
  features = module.width
  for level in range(doublings):
    x = spectral_normalized(
        nn.Conv(features, (4, 4), strides=(2, 2), padding="SAME",
                use_bias=level == 0 or module.norm == "none", dtype=module.dtype,
                kernel_init=dcgan_kernel_init, conv_general_dilated=strided_conv),
        enabled=module.spectral_norm, update_stats=train, n_steps=module.sn_steps)(x)
    if level > 0 and module.norm == "batch":  # DCGAN: none on the input layer.
      x = nn.BatchNorm(
          use_running_average=not train, momentum=module.bn_momentum,
          epsilon=1e-5, axis_name=module.bn_axis_name if train else None,
          dtype=module.dtype, scale_init=dcgan_bn_scale_init)(x)
    elif level > 0 and module.norm == "layer":  # Per example, over (H, W, C).
      x = nn.LayerNorm(epsilon=1e-5, reduction_axes=(-3, -2, -1), dtype=module.dtype)(x)
    x = nn.leaky_relu(x, 0.2)
    features *= 2
  return x.reshape(x.shape[0], -1)


class Discriminator(nn.Module):
  """Images (B, resolution, resolution, channels) -> real/fake logits (B,).

  Attributes:
    resolution: input height and width (see `resolution_plan`).
    width: channels after the first convolution; each later level doubles it.
    bn_momentum: BatchNorm running-average momentum.
    bn_axis_name: mapped axis over which BatchNorm averages batch statistics.
    norm: normalisation after every convolution but the first, one of
      `DISCRIMINATOR_NORMS` ("batch": DCGAN's; "layer": per example, WGAN-GP's critic;
      "none"). Convolutions without a following normalisation have a bias.
    spectral_norm: spectrally normalise every kernel (Miyato et al. 2018).
    sn_steps: power iterations per call.
    dtype: compute dtype (parameters are always float32).
  """
  resolution: int
  width: int = 64
  bn_momentum: float = 0.9
  bn_axis_name: str | None = None
  norm: str = "batch"
  spectral_norm: bool = False
  sn_steps: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images_bhwc: jax.Array, *, train: bool) -> jax.Array:
    x = discriminator_features(self, images_bhwc, train)
    logits = spectral_normalized(
        nn.Dense(1, dtype=self.dtype, kernel_init=dcgan_kernel_init),
        enabled=self.spectral_norm, update_stats=train, n_steps=self.sn_steps)(x)
    return logits[:, 0].astype(jnp.float32)
