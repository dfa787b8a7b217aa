"""Checks of a VAE config (`configs/vae.py`) that run before anything is written."""

import ml_collections

from cnnjax.data.pipeline import RESIZE_MODES
from cnnjax.models.dcgan import resolution_plan
from cnnjax.models.upsample import upsample_layer
from cnnjax.train.checkpointing import validate_checkpoint_config
from cnnjax.train.divergence import NONFINITE_MODES
from cnnjax.train.vae_program import likelihood_from_config
from cnnjax.train.validation import require, require_positive, validate_eval_config

VAE_MODELS = ("conv_vae",)


def _require_choice(config: ml_collections.ConfigDict, path: str,
                    choices: tuple[str, ...]) -> None:
  section, field = path.split(".")
  value = config[section][field]
  require(value in choices, f"{path} must be one of {', '.join(choices)}, got {value!r}.")


def validate_vae_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises `ConfigError` naming the first invalid field of a VAE config.

  Args:
    config: the experiment config.
    num_devices: devices the global batch is split over.
  """
  _require_choice(config, "model.name", VAE_MODELS)
  upsample_layer(config.model.upsample)
  resolution_plan(config.data.image_size)
  _require_choice(config, "data.resize", RESIZE_MODES)
  _require_choice(config, "train.on_nonfinite", NONFINITE_MODES)
  positive_fields = {
      "model": ("latent_dim", "encoder_width", "decoder_width"),
      "data": ("num_threads", "prefetch"),
      "optim": ("lr",),
      "train": ("batch_size", "log_every", "sample_every", "num_samples"),
      "eval": ("elbo_num_examples", "importance_chunk", "likelihood_batch_size"),
  }
  for section, names in positive_fields.items():
    require_positive(config[section], section, names)
  non_negative = ("likelihood.gaussian_scale", "loss.beta", "loss.kl_warmup_steps",
                  "train.num_steps", "eval.elbo_every", "eval.num_importance")
  for path in non_negative:
    section, field = path.split(".")
    require(config[section][field] >= 0,
             f"{path} must be >= 0, got {config[section][field]}.")
  require(0.0 <= config.optim.b1 < 1.0 and 0.0 <= config.optim.b2 < 1.0,
           f"optim.b1 and optim.b2 must be in [0, 1), got {config.optim.b1} and "
           f"{config.optim.b2}.")
  likelihood_from_config(config)
  validate_checkpoint_config(config.checkpoint)
  validate_eval_config(config)
  require(config.train.batch_size % num_devices == 0,
           f"train.batch_size={config.train.batch_size} is not divisible by the "
           f"{num_devices} devices; use a multiple of {num_devices}.")
