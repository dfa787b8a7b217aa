"""SNGAN's ResNet generator and discriminator (Miyato et al. 2018), 32x32 and 64x64.

Generator: Dense to a 4x4 map, residual blocks that double the resolution
(BN-ReLU-upsample-conv3x3-BN-ReLU-conv3x3, shortcut upsample-conv1x1; nearest-neighbour
upsampling, so no transposed convolution), then BN-ReLU-conv3x3-tanh. Discriminator:
an "optimised" first block (conv-ReLU-conv-avgpool, shortcut avgpool-conv1x1), residual
blocks (ReLU-conv-ReLU-conv[-avgpool], shortcut [conv1x1[-avgpool]]), ReLU, a global sum
over space and a Dense to one logit.

Class conditioning (`num_classes` > 0), as in `cnnjax.models.conditioning`: the
generator's block BatchNorms are class-conditional ("cbn", the default, as Miyato &
Koyama 2018) or a label embedding is concatenated to the latent ("concat"); the
discriminator ends in the projection head ("projection", the default), an auxiliary
classifier ("acgan": it then returns (logits, class logits)), or sees one-hot label maps
appended to the image channels ("concat").

Widths (`width` = 64 gives the papers' widths):
  32x32 (CIFAR): G 4w at every level (256), D 2w (128); D downsamples in blocks 1-2.
  64x64: G 16w, 8w, 4w, 2w, w (1024 ... 64); D w ... 16w, downsampling in every block.
Spectral norm (`cnnjax.models.spectral_norm`, state in `batch_stats`) is on in D and
optional in G. Initialisation as the authors' code: Glorot-uniform, gain sqrt(2) for the
residual branches' 3x3 convolutions, 1 elsewhere.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax.errors import ConfigError
from cnnjax.models.conditioning import (DISCRIMINATOR_CONDITIONING, GENERATOR_CONDITIONING,
                                        AuxiliaryClassifierHead, ConditionalBatchNorm,
                                        ProjectionHead, check_conditioning, embed_classes,
                                        require_labels, with_label_maps)
from cnnjax.models.spectral_norm import spectral_normalized

# resolution -> (generator width multipliers: the 4x4 map, then each block's output;
#                discriminator multipliers per block; which blocks downsample).
_PLANS = {
    32: ((4, 4, 4, 4), (2, 2, 2, 2), (True, True, False, False)),
    64: ((16, 8, 4, 2, 1), (1, 2, 4, 8, 16), (True,) * 5),
}
_BOTTOM_SIZE = 4
residual_init = nn.initializers.variance_scaling(2.0, "fan_avg", "uniform")  # gain sqrt(2)
linear_init = nn.initializers.xavier_uniform()


def sngan_plan(resolution: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[bool, ...]]:
  """(generator multipliers, discriminator multipliers, discriminator downsampling).

  Raises:
    ConfigError: for a resolution the SNGAN architectures do not cover.
  """
  if resolution not in _PLANS:
    raise ConfigError(f"SNGAN makes {resolution}x{resolution} images only at "
                      f"{' or '.join(map(str, _PLANS))}: set data.image_size to one.")
  return _PLANS[resolution]


def _upsample_nearest(x_bhwc: jax.Array) -> jax.Array:
  return jnp.repeat(jnp.repeat(x_bhwc, 2, axis=1), 2, axis=2)


def _avg_pool(x_bhwc: jax.Array) -> jax.Array:
  return nn.avg_pool(x_bhwc, (2, 2), strides=(2, 2))


def _conv(module: nn.Module, features: int, size: int, init, train: bool):
  """A SAME size x size convolution of `module`, spectrally normalised if it says so.

  `module` provides `spectral_norm`, `sn_steps` and `dtype`; call this inside its
  compact `__call__`, so that the layer is created there.
  """
  return spectral_normalized(
      nn.Conv(features, (size, size), padding="SAME", dtype=module.dtype,
              kernel_init=init),
      enabled=module.spectral_norm, update_stats=train, n_steps=module.sn_steps)


class GeneratorBlock(nn.Module):
  """Residual block doubling the resolution: (B, H, W, C) -> (B, 2H, 2W, features).

  Attributes:
    features: output channels.
    num_classes: > 0 makes both BatchNorms class-conditional (labels required).
    spectral_norm, sn_steps, bn_momentum, bn_axis_name, dtype: as `SnganGenerator`.
  """
  features: int
  num_classes: int = 0
  spectral_norm: bool = False
  sn_steps: int = 1
  bn_momentum: float = 0.9
  bn_axis_name: str | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_bhwc: jax.Array, labels_b: jax.Array | None, *,
               train: bool) -> jax.Array:
    def norm_relu(h):
      if self.num_classes:
        h = ConditionalBatchNorm(self.num_classes, momentum=self.bn_momentum,
                                 axis_name=self.bn_axis_name, dtype=self.dtype)(
                                     h, labels_b, train=train)
      else:
        h = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                         epsilon=1e-5, axis_name=self.bn_axis_name if train else None,
                         dtype=self.dtype)(h)
      return nn.relu(h)

    h = _conv(self, self.features, 3, residual_init, train)(
        _upsample_nearest(norm_relu(x_bhwc)))
    h = _conv(self, self.features, 3, residual_init, train)(norm_relu(h))
    shortcut = _conv(self, self.features, 1, linear_init, train)(_upsample_nearest(x_bhwc))
    return h + shortcut


class DiscriminatorBlock(nn.Module):
  """Residual block, optionally halving the resolution: (B, H, W, C) -> (B, H', W', features).

  Attributes:
    features: output channels.
    downsample: average-pool both branches by 2.
    first: the "optimised" input block (no leading ReLU; pool before the shortcut).
    spectral_norm, sn_steps, dtype: as `SnganDiscriminator`.
  """
  features: int
  downsample: bool = True
  first: bool = False
  spectral_norm: bool = True
  sn_steps: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_bhwc: jax.Array, *, train: bool) -> jax.Array:
    pool = _avg_pool if self.downsample else (lambda x: x)
    h = x_bhwc if self.first else nn.relu(x_bhwc)
    h = _conv(self, self.features, 3, residual_init, train)(h)
    h = pool(_conv(self, self.features, 3, residual_init, train)(nn.relu(h)))
    if self.first:
      return h + _conv(self, self.features, 1, linear_init, train)(pool(x_bhwc))
    if self.downsample or x_bhwc.shape[-1] != self.features:
      return h + pool(_conv(self, self.features, 1, linear_init, train)(x_bhwc))
    return h + x_bhwc


class SnganGenerator(nn.Module):
  """Latents (B, Z) [and labels (B,)] -> images (B, R, R, channels) in [-1, 1].

  Attributes:
    resolution: 32 or 64.
    channels: output channels.
    width: base width (see the module docstring).
    num_classes: > 0 for a class-conditional generator (labels required).
    conditioning: with `num_classes`, "cbn" (conditional BatchNorm in the blocks) or
      "concat" (a label embedding, `params/label_embedding`, joins the latent).
    label_embed_dim: size of the "concat" embedding (None: num_classes).
    spectral_norm: spectrally normalise every Dense/Conv kernel (BigGAN does).
    sn_steps: power iterations per call.
    bn_momentum: BatchNorm running-average momentum.
    bn_axis_name: mapped axis over which BatchNorm averages batch statistics.
    dtype: compute dtype (parameters are always float32).
  """
  resolution: int
  channels: int
  width: int = 64
  num_classes: int = 0
  conditioning: str = "cbn"
  label_embed_dim: int | None = None
  spectral_norm: bool = False
  sn_steps: int = 1
  bn_momentum: float = 0.9
  bn_axis_name: str | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, latents_bz: jax.Array, labels_b: jax.Array | None = None, *,
               train: bool) -> jax.Array:
    multipliers, _, _ = sngan_plan(self.resolution)
    block_classes = 0
    if self.num_classes:
      check_conditioning(self.conditioning, GENERATOR_CONDITIONING,
                         "model.g_conditioning", self.num_classes)
      labels_b = require_labels(labels_b, "SnganGenerator")
      if self.conditioning == "cbn":
        block_classes = self.num_classes
      else:
        embedding_be = embed_classes(nn.Embed(
            self.num_classes, self.label_embed_dim or self.num_classes,
            embedding_init=nn.initializers.normal(1.0), name="label_embedding"), labels_b)
        latents_bz = jnp.concatenate([latents_bz, embedding_be.astype(latents_bz.dtype)],
                                     axis=-1)
    bottom_features = self.width * multipliers[0]
    x = spectral_normalized(
        nn.Dense(_BOTTOM_SIZE * _BOTTOM_SIZE * bottom_features, dtype=self.dtype,
                 kernel_init=linear_init),
        enabled=self.spectral_norm, update_stats=train, n_steps=self.sn_steps)(
            latents_bz.astype(self.dtype))
    x = x.reshape(-1, _BOTTOM_SIZE, _BOTTOM_SIZE, bottom_features)
    for multiplier in multipliers[1:]:
      x = GeneratorBlock(
          features=self.width * multiplier, num_classes=block_classes,
          bn_momentum=self.bn_momentum, bn_axis_name=self.bn_axis_name,
          spectral_norm=self.spectral_norm, sn_steps=self.sn_steps,
          dtype=self.dtype)(x, labels_b, train=train)
    x = nn.relu(nn.BatchNorm(
        use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5,
        axis_name=self.bn_axis_name if train else None, dtype=self.dtype)(x))
    x = _conv(self, self.channels, 3, linear_init, train)(x)
    return jnp.tanh(x.astype(jnp.float32))


class SnganDiscriminator(nn.Module):
  """Images (B, R, R, C) [and labels (B,)] -> logits (B,).

  No BatchNorm. Variables: `params` and, with spectral norm, its `u`/`sigma` in
  `batch_stats` (so apply it in training with `mutable=["batch_stats"]`).

  Attributes:
    resolution: 32 or 64.
    width: base width (see the module docstring).
    num_classes: > 0 for a class-conditional discriminator.
    conditioning: with `num_classes`, "projection", "acgan" or "concat" (see the module
      docstring); all but "acgan" need labels.
    spectral_norm: spectrally normalise every kernel (the paper: True).
    sn_steps: power iterations per call.
    dtype: compute dtype (parameters are always float32).
  """
  resolution: int
  width: int = 64
  num_classes: int = 0
  conditioning: str = "projection"
  spectral_norm: bool = True
  sn_steps: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images_bhwc: jax.Array, labels_b: jax.Array | None = None, *,
               train: bool) -> jax.Array | tuple[jax.Array, jax.Array]:
    _, multipliers, downsample = sngan_plan(self.resolution)
    block = functools.partial(DiscriminatorBlock, spectral_norm=self.spectral_norm,
                              sn_steps=self.sn_steps, dtype=self.dtype)
    head_options = dict(spectral_norm=self.spectral_norm, sn_steps=self.sn_steps,
                        kernel_init=linear_init, dtype=self.dtype)
    if self.num_classes:
      check_conditioning(self.conditioning, DISCRIMINATOR_CONDITIONING,
                         "model.d_conditioning", self.num_classes)
      if self.conditioning == "concat":
        images_bhwc = with_label_maps(
            images_bhwc, require_labels(labels_b, "SnganDiscriminator"), self.num_classes)
    x = images_bhwc.astype(self.dtype)
    for index, (multiplier, down) in enumerate(zip(multipliers, downsample)):
      x = block(features=self.width * multiplier, downsample=down,
                first=index == 0)(x, train=train)
    features_bf = jnp.sum(nn.relu(x), axis=(1, 2))
    if self.num_classes and self.conditioning == "projection":
      return ProjectionHead(self.num_classes, **head_options)(
          features_bf, require_labels(labels_b, "SnganDiscriminator"), train=train)
    if self.num_classes and self.conditioning == "acgan":
      return AuxiliaryClassifierHead(self.num_classes, **head_options)(features_bf,
                                                                       train=train)
    logits = spectral_normalized(
        nn.Dense(1, dtype=self.dtype, kernel_init=linear_init, name="linear"),
        enabled=self.spectral_norm, update_stats=train, n_steps=self.sn_steps)(features_bf)
    return logits[:, 0].astype(jnp.float32)
