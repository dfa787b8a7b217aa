"""An image -> latent encoder for GAN inversion (the `gan_encoder` kind).

A strided-convolution stack like the DCGAN discriminator's (4x4 stride-2 convolutions,
LeakyReLU 0.2, LayerNorm after every convolution but the first) ending in a dense layer
to the generator's latent size. LayerNorm rather than BatchNorm: the encoder is applied
one image at a time inside the vmapped projector (hybrid inversion), where batch
statistics do not exist.

For a class-conditional generator the encoder also sees the image's class: its one-hot
vector joins the flattened features before the dense layer, so E(x, y) only has to
explain what the class does not (inversion knows each real image's class, as the
projector does).
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class LatentEncoder(nn.Module):
  """Maps images (B, H, W, C) in [-1, 1] (and, if conditional, labels (B,)) to latents
  (B, latent_dim).

  Attributes:
    latent_dim: the generator's latent size Z.
    widths: channels of each stride-2 convolution.
    num_classes: classes of a conditional generator's labels; 0 if unconditional.
    dtype: compute dtype (parameters stay float32).
  """
  latent_dim: int
  widths: Sequence[int] = (32, 64, 128)
  num_classes: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images_bhwc: jax.Array,
               labels_b: Optional[jax.Array] = None) -> jax.Array:
    if (labels_b is None) != (self.num_classes == 0):
      raise ValueError(f"This encoder is for a generator with {self.num_classes} "
                       "classes: pass labels exactly when it has classes.")
    x = images_bhwc.astype(self.dtype)
    for index, width in enumerate(self.widths):
      x = nn.Conv(width, (4, 4), strides=(2, 2), padding="SAME", dtype=self.dtype)(x)
      if index:
        x = nn.LayerNorm(dtype=self.dtype)(x)
      x = nn.leaky_relu(x, 0.2)
    x = x.reshape(x.shape[0], -1)
    if self.num_classes:
      x = jnp.concatenate([x, jax.nn.one_hot(labels_b, self.num_classes, dtype=x.dtype)],
                          axis=-1)
    return nn.Dense(self.latent_dim, dtype=self.dtype)(x).astype(jnp.float32)


def build_latent_encoder(model_config, *, latent_dim: int,
                         num_classes: int = 0) -> LatentEncoder:
  """The encoder of a `gan_encoder` config's `model` section (for a generator with
  `num_classes` classes, 0 if unconditional).

  Raises:
    ValueError: empty or non-positive widths, or an unknown dtype.
  """
  widths = tuple(int(width) for width in model_config.widths)
  if not widths or min(widths) <= 0:
    raise ValueError(f"model.widths must be positive channel counts, got {widths}.")
  if model_config.dtype not in ("float32", "bfloat16"):
    raise ValueError(f"model.dtype must be float32 or bfloat16, got "
                     f"{model_config.dtype!r}.")
  return LatentEncoder(latent_dim=latent_dim, widths=widths, num_classes=num_classes,
                       dtype=jnp.dtype(model_config.dtype))
