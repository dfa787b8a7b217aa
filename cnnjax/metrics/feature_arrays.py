"""Validation of the (num_samples, num_features) arrays that every metric consumes."""

import numpy as np

from cnnjax.errors import ConfigError


def as_feature_matrix(features, name: str = "features") -> np.ndarray:
  """Returns `features` as a finite float64 array of shape (N, D).

  Raises:
    ConfigError: if `features` is not two-dimensional or holds NaN/inf.
  """
  features_nd = np.asarray(features, dtype=np.float64)
  if features_nd.ndim != 2:
    raise ConfigError(f"{name} must have shape (num_samples, num_features), got "
                      f"{features_nd.shape}.")
  if not np.isfinite(features_nd).all():
    raise ConfigError(f"{name} contain NaN or infinite values.")
  return features_nd


def as_feature_pair(features_a, features_b, names: tuple[str, str] = (
    "features_a", "features_b")) -> tuple[np.ndarray, np.ndarray]:
  """Validates two feature sets of shapes (N, D) and (M, D) with the same D."""
  features_nd = as_feature_matrix(features_a, names[0])
  features_md = as_feature_matrix(features_b, names[1])
  if features_nd.shape[1] != features_md.shape[1]:
    raise ConfigError(f"{names[0]} have {features_nd.shape[1]} dims but {names[1]} "
                      f"have {features_md.shape[1]}.")
  return features_nd, features_md
