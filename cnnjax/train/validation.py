"""Config checks that run before anything is written: one clear error per bad value."""

import ml_collections

from cnnjax.data.pipeline import RESIZE_MODES
from cnnjax.train.checkpointing import validate_checkpoint_config
from cnnjax.train.divergence import NONFINITE_MODES
from cnnjax.errors import ConfigError
from cnnjax.losses.gan import get_gan_loss
from cnnjax.models import GAN_MODELS, compute_dtype
from cnnjax.models.dcgan import resolution_plan
from cnnjax.models.upsample import upsample_layer


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ConfigError(message)


def _require_positive(section: ml_collections.ConfigDict, prefix: str,
                      names: tuple[str, ...]) -> None:
  for name in names:
    value = section[name]
    _require(value > 0, f"{prefix}.{name} must be positive, got {value}.")


def validate_gan_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises `ConfigError` naming the first invalid field of a GAN config.

  Args:
    config: the experiment config.
    num_devices: devices the global batch is split over.
  """
  _require(config.model.name in GAN_MODELS,
           f"Unknown model.name {config.model.name!r}: use one of {', '.join(GAN_MODELS)}.")
  _require_positive(config.model, "model", ("latent_dim", "g_width", "d_width"))
  _require(0.0 <= config.model.bn_momentum < 1.0,
           f"model.bn_momentum must be in [0, 1), got {config.model.bn_momentum}.")
  compute_dtype(config.model.dtype)
  upsample_layer(config.model.upsample)
  get_gan_loss(config.loss.name)
  resolution_plan(config.data.image_size)
  _require(config.data.resize in RESIZE_MODES,
           f"data.resize must be one of {', '.join(RESIZE_MODES)}, got {config.data.resize!r}.")
  _require_positive(config.data, "data", ("num_threads", "prefetch"))
  _require_positive(config.optim, "optim", ("g_lr", "d_lr"))
  for name in ("b1", "b2"):
    value = config.optim[name]
    _require(0.0 <= value < 1.0, f"optim.{name} must be in [0, 1), got {value}.")
  _require_positive(config.train, "train",
                    ("batch_size", "log_every", "sample_every", "num_samples"))
  _require(config.train.num_steps >= 0,
           f"train.num_steps must be >= 0, got {config.train.num_steps}.")
  _require(config.train.on_nonfinite in NONFINITE_MODES,
           f"train.on_nonfinite must be one of {', '.join(NONFINITE_MODES)}, "
           f"got {config.train.on_nonfinite!r}.")
  validate_checkpoint_config(config.checkpoint)
  validate_eval_config(config)
  _require(config.train.batch_size % num_devices == 0,
           f"train.batch_size={config.train.batch_size} is not divisible by the "
           f"{num_devices} devices; use a multiple of {num_devices}.")


def validate_eval_config(config: ml_collections.ConfigDict) -> None:
  """Checks a generative config's sample-quality `eval` section, if it has one."""
  if "eval" not in config or "num_samples" not in config.eval:
    return
  section = config.eval
  _require(section.every >= 0, f"eval.every must be >= 0, got {section.every}.")
  _require_positive(section, "eval", ("batch_size", "max_reference_features"))
  _require(section.num_samples > 3,
           f"eval.num_samples must be more than 3 (the precision/recall neighbourhood "
           f"size), got {section.num_samples}; use a few thousand.")
  _require(not config.checkpoint.best_metric or section.every > 0
           or config.checkpoint.best_metric not in ("fid", "kid_mean", "precision",
                                                    "recall", "density", "coverage"),
           f"checkpoint.best_metric={config.checkpoint.best_metric!r} is a sample-quality "
           "metric, computed only when eval.every > 0; set eval.every.")
