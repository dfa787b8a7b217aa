"""Model families, built from the `model` section of a config."""

import jax.numpy as jnp
import ml_collections

from cnnjax.errors import ConfigError
from cnnjax.models import dcgan

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
GAN_MODELS = ("dcgan",)


def compute_dtype(name: str):
  """The jnp dtype called `name` (config field `model.dtype`)."""
  if name not in DTYPES:
    raise ConfigError(f"Unknown model.dtype {name!r}: use one of {', '.join(DTYPES)}.")
  return DTYPES[name]


def build_gan(model_config: ml_collections.ConfigDict, *, resolution: int,
              channels: int, axis_name: str | None):
  """Returns the (generator, discriminator) modules described by `model_config`.

  Args:
    model_config: the config's `model` section.
    resolution: image height and width.
    channels: image channels.
    axis_name: mapped axis for synchronised BatchNorm in training mode.
  """
  if model_config.name != "dcgan":
    raise ConfigError(f"Unknown model.name {model_config.name!r}: use one of "
                      f"{', '.join(GAN_MODELS)}.")
  dtype = compute_dtype(model_config.dtype)
  generator = dcgan.Generator(
      resolution=resolution, channels=channels, width=model_config.g_width,
      upsample=model_config.upsample, bn_momentum=model_config.bn_momentum,
      bn_axis_name=axis_name, dtype=dtype)
  discriminator = dcgan.Discriminator(
      resolution=resolution, width=model_config.d_width,
      bn_momentum=model_config.bn_momentum, bn_axis_name=axis_name, dtype=dtype)
  return generator, discriminator
