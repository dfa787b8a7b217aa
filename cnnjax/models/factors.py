"""The factor model: the in-domain classifier's trunk with a second head that regresses
shapes' ground-truth factors (`x`, `y`, `scale`, `rotation`, `hue`).

Circular factors are regressed as (cos, sin) of their angle, the others rescaled to
[-1, 1] over their range, so the regression head has `NUM_TARGETS` = 7 outputs;
`encode_factors` and `decode_factors` map between raw factors and these targets.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from cnnjax.data.shapes import FACTOR_RANGES
from cnnjax.models.classifier import Classifier, build_classifier

FACTOR_NAMES = tuple(FACTOR_RANGES)
_CIRCULAR = {"rotation": 2 * jnp.pi, "hue": 1.0}   # name -> period
NUM_TARGETS = sum(2 if name in _CIRCULAR else 1 for name in FACTOR_NAMES)


def encode_factors(factors_bf: jax.Array) -> jax.Array:
  """Raw factors (B, F) in `FACTOR_NAMES` order -> regression targets (B, NUM_TARGETS)."""
  columns = []
  for index, name in enumerate(FACTOR_NAMES):
    value_b = factors_bf[:, index]
    if name in _CIRCULAR:
      angle_b = value_b * (2 * jnp.pi / _CIRCULAR[name])
      columns += [jnp.cos(angle_b), jnp.sin(angle_b)]
    else:
      low, high = FACTOR_RANGES[name]
      columns.append((value_b - (low + high) / 2) / ((high - low) / 2))
  return jnp.stack(columns, axis=-1)


def decode_factors(targets_bt: jax.Array) -> jax.Array:
  """Regression outputs (B, NUM_TARGETS) -> raw factors (B, F) (angles in [0, period))."""
  columns, column = [], 0
  for name in FACTOR_NAMES:
    if name in _CIRCULAR:
      angle_b = jnp.arctan2(targets_bt[:, column + 1], targets_bt[:, column])
      columns.append(jnp.mod(angle_b * (_CIRCULAR[name] / (2 * jnp.pi)), _CIRCULAR[name]))
      column += 2
    else:
      low, high = FACTOR_RANGES[name]
      columns.append(targets_bt[:, column] * ((high - low) / 2) + (low + high) / 2)
      column += 1
  return jnp.stack(columns, axis=-1)


class FactorNet(nn.Module):
  """Images (B, H, W, C) in [-1, 1] -> (class logits (B, K), factor targets (B, T)).

  Attributes:
    trunk: the classifier (its convolutions, features and class head).
  """
  trunk: Classifier

  @nn.compact
  def __call__(self, images_bhwc: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    logits_bk, features_bd = self.trunk(images_bhwc, train)
    targets_bt = nn.Dense(NUM_TARGETS, name="factor_head")(features_bd)
    return logits_bk, targets_bt.astype(jnp.float32)


def build_factor_net(model_config: ml_collections.ConfigDict, *, num_classes: int,
                     axis_name: str | None) -> FactorNet:
  """The `FactorNet` of a factors config's `model` section (the classifier's fields).

  Raises:
    ConfigError: naming the first invalid field.
  """
  return FactorNet(trunk=build_classifier(model_config, num_classes=num_classes,
                                          axis_name=axis_name))
