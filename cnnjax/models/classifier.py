"""A small in-domain CNN classifier whose penultimate features score generated images.

Each level is `convs_per_level` 3x3 conv-BatchNorm-ReLU blocks followed by 2x2 max
pooling (none after the last level); global average pooling and a dense ReLU layer give
the `features` (B, feature_dim), and a dense layer the class `logits`. Any resolution
(28, 32, 64, ...) and channel count works: pooling rounds odd sizes up.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from cnnjax.errors import ConfigError
from cnnjax.models import compute_dtype

CLASSIFIER_MODELS = ("cnn",)


class Classifier(nn.Module):
  """Images (B, H, W, C) in [-1, 1] -> (logits (B, num_classes), features (B, D)).

  Attributes:
    num_classes: number of classes.
    widths: channels of the convolutions of each level, e.g. (16, 32, 64).
    convs_per_level: conv-BN-ReLU blocks per level.
    feature_dim: D, the size of the penultimate (feature) layer.
    bn_momentum: BatchNorm running-average momentum.
    bn_axis_name: mapped axis over which BatchNorm averages batch statistics in
      training mode (synchronised BatchNorm), or None.
    dtype: compute dtype (parameters are always float32; outputs are float32).
  """
  num_classes: int
  widths: Sequence[int] = (16, 32, 64)
  convs_per_level: int = 2
  feature_dim: int = 128
  bn_momentum: float = 0.9
  bn_axis_name: str | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images_bhwc: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    batch_norm = lambda: nn.BatchNorm(  # noqa: E731
        use_running_average=not train, momentum=self.bn_momentum,
        axis_name=self.bn_axis_name if train else None, dtype=self.dtype)
    hidden = images_bhwc.astype(self.dtype)
    for level, width in enumerate(self.widths):
      for _ in range(self.convs_per_level):
        hidden = nn.Conv(width, (3, 3), use_bias=False, dtype=self.dtype)(hidden)
        hidden = nn.relu(batch_norm()(hidden))
      if level < len(self.widths) - 1:
        hidden = nn.max_pool(hidden, (2, 2), strides=(2, 2), padding="SAME")
    pooled_bw = jnp.mean(hidden, axis=(1, 2))
    features_bd = nn.relu(batch_norm()(
        nn.Dense(self.feature_dim, use_bias=False, dtype=self.dtype)(pooled_bw)))
    logits_bk = nn.Dense(self.num_classes, dtype=self.dtype)(features_bd)
    return logits_bk.astype(jnp.float32), features_bd.astype(jnp.float32)


def build_classifier(model_config: ml_collections.ConfigDict, *, num_classes: int,
                     axis_name: str | None) -> Classifier:
  """The `Classifier` described by a classifier config's `model` section.

  Args:
    model_config: the config's `model` section.
    num_classes: classes of the dataset.
    axis_name: mapped axis for synchronised BatchNorm in training mode.

  Raises:
    ConfigError: naming the first invalid field of `model_config`.
  """
  if model_config.name not in CLASSIFIER_MODELS:
    raise ConfigError(f"Unknown model.name {model_config.name!r} for a classifier: use "
                      f"one of {', '.join(CLASSIFIER_MODELS)}.")
  widths = tuple(model_config.widths)
  if not widths or min(widths) <= 0:
    raise ConfigError(f"model.widths must be positive channel counts, got {widths}.")
  for name in ("convs_per_level", "feature_dim"):
    if model_config[name] <= 0:
      raise ConfigError(f"model.{name} must be positive, got {model_config[name]}.")
  if not 0.0 <= model_config.bn_momentum < 1.0:
    raise ConfigError(f"model.bn_momentum must be in [0, 1), got "
                      f"{model_config.bn_momentum}.")
  return Classifier(
      num_classes=num_classes, widths=widths,
      convs_per_level=model_config.convs_per_level,
      feature_dim=model_config.feature_dim, bn_momentum=model_config.bn_momentum,
      bn_axis_name=axis_name, dtype=compute_dtype(model_config.dtype))


def random_shift(images_bhwc: jax.Array, noise_b2: jax.Array, max_shift: int) -> jax.Array:
  """Data augmentation: translates each image by whole pixels, uniformly in
  [-max_shift, max_shift] along each axis, extending the borders' edge pixels.

  Args:
    images_bhwc: images (B, H, W, C).
    noise_b2: standard normal noise (B, 2), mapped to the uniform shifts (dy, dx).
    max_shift: the largest shift, in pixels.

  Returns:
    The shifted images (B, H, W, C).
  """
  num_shifts = 2 * max_shift + 1
  shifts_b2 = jnp.clip(jnp.floor(jax.scipy.special.ndtr(noise_b2) * num_shifts),
                       0, num_shifts - 1).astype(jnp.int32)
  padded = jnp.pad(images_bhwc, ((0, 0), (max_shift,) * 2, (max_shift,) * 2, (0, 0)),
                   mode="edge")
  crop = lambda image, shift: jax.lax.dynamic_slice(  # noqa: E731
      image, (shift[0], shift[1], 0), images_bhwc.shape[1:])
  return jax.vmap(crop)(padded, shifts_b2)
