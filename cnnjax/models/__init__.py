"""Model families, built from the `model` section of a config: the GAN backbones
(DCGAN, SNGAN) with their class conditioning, and the modules every family shares."""

import jax.numpy as jnp
import ml_collections

from cnnjax.errors import ConfigError
from cnnjax.models import conditioning, dcgan, sngan

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
GAN_MODELS = ("dcgan", "sngan")  # Backbones (config field `model.name`).
NO_CONDITIONING = "none"
GENERATOR_CONDITIONING = (NO_CONDITIONING,) + conditioning.GENERATOR_CONDITIONING
DISCRIMINATOR_CONDITIONING = (NO_CONDITIONING,) + conditioning.DISCRIMINATOR_CONDITIONING


def compute_dtype(name: str):
  """The jnp dtype called `name` (config field `model.dtype`)."""
  if name not in DTYPES:
    raise ConfigError(f"Unknown model.dtype {name!r}: use one of {', '.join(DTYPES)}.")
  return DTYPES[name]


def check_gan_model(model_config: ml_collections.ConfigDict) -> None:
  """Raises `ConfigError` for a backbone or conditioning the GAN builder cannot make."""
  if model_config.name not in GAN_MODELS:
    raise ConfigError(f"Unknown model.name {model_config.name!r}: use one of "
                      f"{', '.join(GAN_MODELS)}.")
  for field, options in (("g_conditioning", GENERATOR_CONDITIONING),
                         ("d_conditioning", DISCRIMINATOR_CONDITIONING)):
    if model_config[field] not in options:
      raise ConfigError(f"Unknown model.{field} {model_config[field]!r}: use one of "
                        f"{', '.join(options)}.")
  if model_config.d_norm not in dcgan.DISCRIMINATOR_NORMS:
    raise ConfigError(f"Unknown model.d_norm {model_config.d_norm!r}: use one of "
                      f"{', '.join(dcgan.DISCRIMINATOR_NORMS)}.")
  if model_config.name == "sngan" and model_config.d_norm != "none":
    raise ConfigError(f"model.d_norm={model_config.d_norm!r}: the SNGAN discriminator has "
                      "no normalisation layers; set model.d_norm='none'.")


def is_conditional_generator(model_config: ml_collections.ConfigDict) -> bool:
  """Whether the generator takes class labels."""
  return model_config.g_conditioning != NO_CONDITIONING


def is_conditional_discriminator(model_config: ml_collections.ConfigDict) -> bool:
  """Whether the discriminator sees class labels (or, AC-GAN, predicts them)."""
  return model_config.d_conditioning != NO_CONDITIONING


def build_gan(model_config: ml_collections.ConfigDict, *, resolution: int,
              channels: int, axis_name: str | None, num_classes: int = 0):
  """Returns the (generator, discriminator) modules described by `model_config`.

  Args:
    model_config: the config's `model` section.
    resolution: image height and width.
    channels: image channels.
    axis_name: mapped axis for synchronised BatchNorm in training mode.
    num_classes: classes of the labels of conditional networks (ignored otherwise).
  """
  check_gan_model(model_config)
  dtype = compute_dtype(model_config.dtype)
  g_conditioning, d_conditioning = model_config.g_conditioning, model_config.d_conditioning
  shared = dict(sn_steps=model_config.sn_steps, dtype=dtype)
  g_options = dict(resolution=resolution, channels=channels, width=model_config.g_width,
                   bn_momentum=model_config.bn_momentum, bn_axis_name=axis_name,
                   spectral_norm=model_config.g_spectral_norm, **shared)
  d_options = dict(resolution=resolution, width=model_config.d_width,
                   spectral_norm=model_config.d_spectral_norm, **shared)
  label_embed_dim = model_config.label_embed_dim or None
  if model_config.name == "sngan":
    generator = sngan.SnganGenerator(
        num_classes=num_classes if is_conditional_generator(model_config) else 0,
        conditioning=g_conditioning, label_embed_dim=label_embed_dim, **g_options)
    discriminator = sngan.SnganDiscriminator(
        num_classes=num_classes if is_conditional_discriminator(model_config) else 0,
        conditioning=d_conditioning, **d_options)
    return generator, discriminator

  g_options["upsample"] = model_config.upsample
  d_options.update(bn_momentum=model_config.bn_momentum, bn_axis_name=axis_name,
                   norm=model_config.d_norm)
  if is_conditional_generator(model_config):
    generator = conditioning.ConditionalGenerator(
        num_classes=num_classes, conditioning=g_conditioning,
        label_embed_dim=label_embed_dim, **g_options)
  else:
    generator = dcgan.Generator(**g_options)
  if is_conditional_discriminator(model_config):
    discriminator = conditioning.ConditionalDiscriminator(
        num_classes=num_classes, conditioning=d_conditioning, **d_options)
  else:
    discriminator = dcgan.Discriminator(**d_options)
  return generator, discriminator
