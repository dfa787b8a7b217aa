"""Config checks that run before anything is written: one clear error per bad value."""

import ml_collections

from cnnjax.augment.diffaugment import parse_policy
from cnnjax.data.pipeline import RESIZE_MODES
from cnnjax.errors import ConfigError
from cnnjax.losses.gan import get_gan_loss
from cnnjax.models import (check_gan_model, compute_dtype, is_conditional_discriminator,
                           is_conditional_generator)
from cnnjax.models.dcgan import resolution_plan
from cnnjax.models.sngan import sngan_plan
from cnnjax.models.upsample import upsample_layer
from cnnjax.train.checkpointing import validate_checkpoint_config
from cnnjax.train.divergence import NONFINITE_MODES


def require(condition: bool, message: str) -> None:
  """Raises `ConfigError(message)` unless `condition` holds."""
  if not condition:
    raise ConfigError(message)


def require_positive(section: ml_collections.ConfigDict, prefix: str,
                      names: tuple[str, ...]) -> None:
  """Raises `ConfigError` naming the first of `section`'s fields `names` that is <= 0."""
  for name in names:
    value = section[name]
    require(value > 0, f"{prefix}.{name} must be positive, got {value}.")


def require_adam_betas(optim: ml_collections.ConfigDict) -> None:
  """Raises `ConfigError` unless `optim.b1` and `optim.b2` are in [0, 1)."""
  for name in ("b1", "b2"):
    value = optim[name]
    require(0.0 <= value < 1.0, f"optim.{name} must be in [0, 1), got {value}.")


def require_train_loop(train: ml_collections.ConfigDict,
                       positive: tuple[str, ...] = ("batch_size", "log_every",
                                                    "sample_every")) -> None:
  """Checks the `train` fields every kind's loop reads: the `positive` ones,
  `num_steps` >= 0 and `on_nonfinite`."""
  require_positive(train, "train", positive)
  require(train.num_steps >= 0, f"train.num_steps must be >= 0, got {train.num_steps}.")
  require(train.on_nonfinite in NONFINITE_MODES,
           f"train.on_nonfinite must be one of {', '.join(NONFINITE_MODES)}, "
           f"got {train.on_nonfinite!r}.")


def require_divisible(train: ml_collections.ConfigDict, names: tuple[str, ...],
                      num_devices: int) -> None:
  """Raises `ConfigError` naming the first `train` batch size not split by the devices."""
  for name in names:
    require(train[name] % num_devices == 0,
             f"train.{name}={train[name]} is not divisible by the {num_devices} "
             f"devices; use a multiple of {num_devices}.")


def validate_gan_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises `ConfigError` naming the first invalid field of a GAN config.

  Args:
    config: the experiment config.
    num_devices: devices the global batch is split over.
  """
  check_gan_model(config.model)
  require_positive(config.model, "model", ("latent_dim", "g_width", "d_width", "sn_steps"))
  require(0.0 <= config.model.bn_momentum < 1.0,
           f"model.bn_momentum must be in [0, 1), got {config.model.bn_momentum}.")
  compute_dtype(config.model.dtype)
  upsample_layer(config.model.upsample)
  (sngan_plan if config.model.name == "sngan" else resolution_plan)(config.data.image_size)
  validate_gan_family(config)
  require(config.data.resize in RESIZE_MODES,
           f"data.resize must be one of {', '.join(RESIZE_MODES)}, got {config.data.resize!r}.")
  require_positive(config.data, "data", ("num_threads", "prefetch"))
  require_positive(config.optim, "optim", ("g_lr", "d_lr"))
  require_adam_betas(config.optim)
  require_train_loop(config.train,
                     ("batch_size", "log_every", "sample_every", "num_samples"))
  validate_checkpoint_config(config.checkpoint)
  validate_eval_config(config)
  require_divisible(config.train, ("batch_size",), num_devices)
  d_steps = config.train.d_steps
  require(config.train.batch_size % (d_steps * num_devices) == 0,
           f"train.batch_size={config.train.batch_size} does not split into "
           f"train.d_steps={d_steps} discriminator batches over {num_devices} devices; "
           f"use a multiple of {d_steps * num_devices}.")


def validate_gan_family(config: ml_collections.ConfigDict) -> None:
  """Checks the GAN family's fields: conditioning, objective, penalties, EMA, schedule."""
  model, loss = config.model, config.loss
  require(not is_conditional_discriminator(model) or is_conditional_generator(model),
           f"model.d_conditioning={model.d_conditioning!r} needs a conditional generator: "
           "set model.g_conditioning to 'concat' or 'cbn' (or d_conditioning to 'none').")
  require(model.label_embed_dim >= 0,
           f"model.label_embed_dim must be >= 0 (0: the number of classes), got "
           f"{model.label_embed_dim}.")
  get_gan_loss(loss.name)
  for name in ("gp_weight", "r1_weight", "aux_class_weight"):
    require(loss[name] >= 0, f"loss.{name} must be >= 0, got {loss[name]}.")
  if model.name == "dcgan" and model.d_norm == "batch":
    for name in ("gp_weight", "r1_weight"):
      require(loss[name] == 0,
               f"loss.{name} > 0 needs a discriminator that treats examples "
               "independently, not BatchNorm: set model.d_norm='layer' or 'none'.")
  require(0.0 <= config.optim.ema_decay < 1.0,
           f"optim.ema_decay must be in [0, 1) (0: no EMA), got {config.optim.ema_decay}.")
  require(config.optim.ema_start_step >= 0,
           f"optim.ema_start_step must be >= 0, got {config.optim.ema_start_step}.")
  require(config.train.d_steps >= 1,
           f"train.d_steps must be at least 1, got {config.train.d_steps}.")
  parse_policy(config.train.diffaugment, field="train.diffaugment")


def validate_eval_config(config: ml_collections.ConfigDict) -> None:
  """Checks a generative config's sample-quality `eval` section, if it has one."""
  if "eval" not in config or "num_samples" not in config.eval:
    return
  section = config.eval
  require(section.every >= 0, f"eval.every must be >= 0, got {section.every}.")
  require_positive(section, "eval", ("batch_size", "max_reference_features"))
  require(section.num_samples > 3,
           f"eval.num_samples must be more than 3 (the precision/recall neighbourhood "
           f"size), got {section.num_samples}; use a few thousand.")
  require(not config.checkpoint.best_metric or section.every > 0
           or config.checkpoint.best_metric not in ("fid", "kid_mean", "precision",
                                                    "recall", "density", "coverage"),
           f"checkpoint.best_metric={config.checkpoint.best_metric!r} is a sample-quality "
           "metric, computed only when eval.every > 0; set eval.every.")
