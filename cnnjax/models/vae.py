"""A convolutional variational autoencoder (Kingma & Welling, 2014) as pure Linen modules.

The encoder halves the resolution with 4x4 stride-2 convolutions (ReLU between) and maps
the flattened features to the mean and log-variance of a diagonal Gaussian q(z | x). The
decoder mirrors the DCGAN generator without BatchNorm: a dense projection to a
`base x base` feature map, then 4x4 stride-2 transposed convolutions (the layer named by
`upsample`, see `cnnjax.models.upsample`) up to the image resolution, ending in
`num_parameters` likelihood parameters per pixel channel (see `cnnjax.losses.vae`).

With `num_classes > 0` the model is a conditional VAE: the label's one-hot vector is
concatenated to the encoder's flattened features and to the decoder's latent.
Resolutions are those of `cnnjax.models.dcgan.resolution_plan` (28, 32, 64, ...).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax.models.dcgan import resolution_plan
from cnnjax.models.fast_conv import strided_conv
from cnnjax.models.upsample import upsample_layer


def _with_label(features_bf: jax.Array, labels_b: jax.Array | None,
                num_classes: int) -> jax.Array:
  """Appends the labels' one-hot vectors (conditional models only); class weights
  (B, K) floats in place of int labels (B,) are appended as they are (mixed classes)."""
  if num_classes <= 0:
    return features_bf
  if jnp.issubdtype(labels_b.dtype, jnp.integer):
    one_hot_bk = jax.nn.one_hot(labels_b, num_classes, dtype=features_bf.dtype)
  else:
    one_hot_bk = labels_b.astype(features_bf.dtype)
  return jnp.concatenate([features_bf, one_hot_bk], axis=-1)


class Encoder(nn.Module):
  """Images (B, R, R, C) in [-1, 1] -> (mean (B, Z), log_variance (B, Z)) of q(z | x).

  Attributes:
    resolution: input height and width R (see `resolution_plan`).
    latent_dim: Z.
    width: channels after the first convolution; each later level doubles it.
    num_classes: > 0 for a conditional encoder (labels (B,) int required).
    dtype: compute dtype (parameters are always float32).
  """
  resolution: int
  latent_dim: int
  width: int = 32
  num_classes: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images_bhwc: jax.Array,
               labels_b: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    _, doublings = resolution_plan(self.resolution)
    x = images_bhwc.astype(self.dtype)
    for level in range(doublings):
      x = nn.relu(nn.Conv(self.width * 2 ** level, (4, 4), strides=(2, 2),
                          padding="SAME", dtype=self.dtype, name=f"conv_{level}",
                          conv_general_dilated=strided_conv)(x))
    x = _with_label(x.reshape(x.shape[0], -1), labels_b, self.num_classes)
    stats = nn.Dense(2 * self.latent_dim, dtype=self.dtype, name="posterior")(x).astype(
        jnp.float32)
    mean_bz, log_variance_bz = jnp.split(stats, 2, axis=-1)
    return mean_bz, log_variance_bz


class Decoder(nn.Module):
  """Latents (B, Z) -> likelihood parameters (B, R, R, C, P) of p(x | z).

  Attributes:
    resolution: output height and width R (see `resolution_plan`).
    channels: image channels C.
    num_parameters: likelihood parameters P per pixel channel (e.g. 1: Bernoulli
      logits; 2: mean and log-scale).
    width: channels before the last upsampling; earlier levels double it.
    upsample: name of the transposed-convolution layer (`cnnjax.models.upsample`).
    num_classes: > 0 for a conditional decoder (labels (B,) int required).
    dtype: compute dtype (parameters are always float32).
  """
  resolution: int
  channels: int
  num_parameters: int = 1
  width: int = 32
  upsample: str = "fast"
  num_classes: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, latents_bz: jax.Array,
               labels_b: jax.Array | None = None) -> jax.Array:
    base, doublings = resolution_plan(self.resolution)
    upsample_cls = upsample_layer(self.upsample)
    features = self.width * 2 ** (doublings - 1)
    x = _with_label(latents_bz.astype(self.dtype), labels_b, self.num_classes)
    x = nn.relu(nn.Dense(base * base * features, dtype=self.dtype, name="project")(x))
    x = x.reshape(x.shape[0], base, base, features)
    # Named layers: the parameters are the same whichever `upsample` layer is used.
    for level in range(doublings - 1):
      features //= 2
      x = nn.relu(upsample_cls(features, (4, 4), strides=(2, 2), padding="SAME",
                               dtype=self.dtype, name=f"upsample_{level}")(x))
    x = upsample_cls(self.channels * self.num_parameters, (4, 4), strides=(2, 2),
                     padding="SAME", dtype=self.dtype, name="output")(x)
    return x.reshape(*x.shape[:3], self.channels, self.num_parameters).astype(jnp.float32)


class ConvVae(nn.Module):
  """The encoder and decoder of one VAE; `encode` and `decode` are applied as methods.

  Attributes:
    encoder: the `Encoder`.
    decoder: the `Decoder` (same resolution, latent size and `num_classes`).
  """
  encoder: Encoder
  decoder: Decoder

  def encode(self, images_bhwc: jax.Array,
             labels_b: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """(mean (B, Z), log_variance (B, Z)) of q(z | x, y)."""
    return self.encoder(images_bhwc, labels_b)

  def decode(self, latents_bz: jax.Array, labels_b: jax.Array | None = None) -> jax.Array:
    """Likelihood parameters (B, R, R, C, P) of p(x | z, y)."""
    return self.decoder(latents_bz, labels_b)

  def __call__(self, images_bhwc: jax.Array, labels_b: jax.Array | None = None
               ) -> jax.Array:
    """Decodes the posterior means (used to initialise both networks)."""
    mean_bz, _ = self.encode(images_bhwc, labels_b)
    return self.decode(mean_bz, labels_b)


def with_upsample(vae: ConvVae, upsample: str) -> ConvVae:
  """The same VAE (same parameters) decoding with the transposed convolution `upsample`.

  Forward-only work (likelihood evaluation) runs faster with "flax" on CPU: the "fast"
  layer only speeds up gradients.
  """
  return vae.clone(decoder=vae.decoder.clone(upsample=upsample))


def build_vae(model_config, *, resolution: int, channels: int, num_parameters: int,
              num_classes: int = 0, dtype: Any = jnp.float32) -> ConvVae:
  """The `ConvVae` of a config's `model` section.

  Args:
    model_config: fields `latent_dim`, `encoder_width`, `decoder_width`, `upsample`.
    resolution: image height and width.
    channels: image channels.
    num_parameters: likelihood parameters per pixel channel.
    num_classes: > 0 for a conditional VAE.
    dtype: compute dtype.
  """
  return ConvVae(
      encoder=Encoder(resolution=resolution, latent_dim=model_config.latent_dim,
                      width=model_config.encoder_width, num_classes=num_classes,
                      dtype=dtype),
      decoder=Decoder(resolution=resolution, channels=channels,
                      num_parameters=num_parameters, width=model_config.decoder_width,
                      upsample=model_config.upsample, num_classes=num_classes,
                      dtype=dtype))
