"""An image -> latent encoder for GAN inversion (the `gan_encoder` kind).

A strided-convolution stack like the DCGAN discriminator's (4x4 stride-2 convolutions,
LeakyReLU 0.2, LayerNorm after every convolution but the first) ending in a dense layer
to the generator's latent size. LayerNorm rather than BatchNorm: the encoder is applied
one image at a time inside the vmapped projector (hybrid inversion), where batch
statistics do not exist.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class LatentEncoder(nn.Module):
  """Maps images (B, H, W, C) in [-1, 1] to latents (B, latent_dim).

  Attributes:
    latent_dim: the generator's latent size Z.
    widths: channels of each stride-2 convolution.
    dtype: compute dtype (parameters stay float32).
  """
  latent_dim: int
  widths: Sequence[int] = (32, 64, 128)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images_bhwc: jax.Array) -> jax.Array:
    x = images_bhwc.astype(self.dtype)
    for index, width in enumerate(self.widths):
      x = nn.Conv(width, (4, 4), strides=(2, 2), padding="SAME", dtype=self.dtype)(x)
      if index:
        x = nn.LayerNorm(dtype=self.dtype)(x)
      x = nn.leaky_relu(x, 0.2)
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(self.latent_dim, dtype=self.dtype)(x).astype(jnp.float32)


def build_latent_encoder(model_config, *, latent_dim: int) -> LatentEncoder:
  """The encoder of a `gan_encoder` config's `model` section.

  Raises:
    ValueError: empty or non-positive widths, or an unknown dtype.
  """
  widths = tuple(int(width) for width in model_config.widths)
  if not widths or min(widths) <= 0:
    raise ValueError(f"model.widths must be positive channel counts, got {widths}.")
  if model_config.dtype not in ("float32", "bfloat16"):
    raise ValueError(f"model.dtype must be float32 or bfloat16, got "
                     f"{model_config.dtype!r}.")
  return LatentEncoder(latent_dim=latent_dim, widths=widths,
                       dtype=jnp.dtype(model_config.dtype))
