"""Fréchet distance between Gaussians fitted to features (FID, Heusel et al. 2017).

  FID = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).

Statistics are accumulated on the host in float64 (`FeatureStats`: a streaming mean and
scatter matrix merged with Chan et al.'s pairwise update, which avoids the cancellation
of the naive sum-of-squares formula), and the matrix square root is taken exactly as
pytorch-fid and torch-fidelity take it, so scores are comparable with theirs.
"""

import dataclasses
import os
import warnings

from absl import logging
import numpy as np
import scipy.linalg

from cnnjax.errors import ConfigError
from cnnjax.metrics.feature_arrays import as_feature_matrix, as_feature_pair

# pytorch-fid tolerates imaginary parts this large on the diagonal of sqrtm(S1 S2).
_MAX_IMAGINARY_DIAGONAL = 1e-3


@dataclasses.dataclass(frozen=True, eq=False)
class FeatureStats:
  """Streaming mean and covariance of feature vectors, in float64.

  Immutable: `update` and `merge` return new statistics (`stats = stats.update(x)`).

  Attributes:
    count: number of feature vectors seen.
    mean_d: their mean, shape (D,).
    scatter_dd: sum over samples of (x - mean)(x - mean)^T, shape (D, D).
  """
  count: int
  mean_d: np.ndarray
  scatter_dd: np.ndarray

  @classmethod
  def zeros(cls, num_features: int) -> "FeatureStats":
    """Statistics of no samples, for `num_features`-dimensional features."""
    return cls(0, np.zeros(num_features), np.zeros((num_features, num_features)))

  @classmethod
  def from_features(cls, features_nd) -> "FeatureStats":
    """Statistics of one batch of features, shape (N, D)."""
    features_nd = as_feature_matrix(features_nd)
    if features_nd.shape[0] == 0:
      return cls.zeros(features_nd.shape[1])
    mean_d = features_nd.mean(axis=0)
    centered_nd = features_nd - mean_d
    return cls(features_nd.shape[0], mean_d, centered_nd.T @ centered_nd)

  @property
  def num_features(self) -> int:
    return self.mean_d.shape[0]

  def update(self, features_nd) -> "FeatureStats":
    """Returns these statistics plus the features (N, D) of one more batch."""
    return self.merge(FeatureStats.from_features(features_nd))

  def merge(self, other: "FeatureStats") -> "FeatureStats":
    """Returns the statistics of the union of both sample sets (Chan et al., 1979)."""
    if other.num_features != self.num_features:
      raise ConfigError(f"Cannot merge statistics of {self.num_features}-dim and "
                        f"{other.num_features}-dim features.")
    if other.count == 0:
      return self
    if self.count == 0:
      return other
    count = self.count + other.count
    delta_d = other.mean_d - self.mean_d
    mean_d = self.mean_d + delta_d * (other.count / count)
    scatter_dd = (self.scatter_dd + other.scatter_dd +
                  np.outer(delta_d, delta_d) * (self.count * other.count / count))
    return FeatureStats(count, mean_d, scatter_dd)

  @property
  def mean(self) -> np.ndarray:
    """The sample mean, shape (D,)."""
    if self.count < 1:
      raise ConfigError("The mean of zero feature vectors is undefined.")
    return self.mean_d

  @property
  def covariance(self) -> np.ndarray:
    """The unbiased sample covariance (ddof=1, like np.cov), shape (D, D)."""
    if self.count < 2:
      raise ConfigError(f"A covariance needs at least 2 feature vectors, got "
                        f"{self.count}.")
    return self.scatter_dd / (self.count - 1)

  def save(self, path: str | os.PathLike) -> None:
    """Writes the statistics to an .npz file.

    Besides `count`, `mean` and `scatter` the file holds `mu` and `sigma` (when
    defined), the keys pytorch-fid uses for precomputed reference statistics.
    """
    arrays = {"count": np.int64(self.count), "mean": self.mean_d,
              "scatter": self.scatter_dd}
    if self.count >= 2:
      arrays.update(mu=self.mean, sigma=self.covariance)
    with open(path, "wb") as file:
      np.savez(file, **arrays)

  @classmethod
  def load(cls, path: str | os.PathLike) -> "FeatureStats":
    """Reads statistics written by `save`."""
    with np.load(path) as arrays:
      missing = {"count", "mean", "scatter"} - set(arrays.files)
      if missing:
        raise ConfigError(f"{os.fspath(path)} is not a FeatureStats file (missing "
                          f"{', '.join(sorted(missing))}).")
      return cls(int(arrays["count"]), np.asarray(arrays["mean"], np.float64),
                 np.asarray(arrays["scatter"], np.float64))


def _quiet_sqrtm(matrix_dd: np.ndarray) -> np.ndarray:
  """scipy.linalg.sqrtm as pytorch-fid calls it (`disp=False`: no singularity warning).

  scipy >= 1.16 deprecates `disp`; without it sqrtm returns the same matrix, minus the
  error estimate that pytorch-fid discards, and warns instead of printing.
  """
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
    return scipy.linalg.sqrtm(matrix_dd)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray, eps: float = 1e-6) -> float:
  """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), as pytorch-fid.

  Args:
    mu1: mean of the first Gaussian, shape (D,).
    sigma1: its covariance, shape (D, D).
    mu2: mean of the second Gaussian, shape (D,).
    sigma2: its covariance, shape (D, D).
    eps: if sqrtm(sigma1 @ sigma2) is not finite (singular product), it is retried
      with eps * I added to both covariances.

  Returns:
    |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 @ sigma2)).

  Raises:
    ConfigError: on mismatched shapes.
    ValueError: if the square root has a large imaginary component (a numerical
      failure, not bad input).
  """
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(
      np.asarray(mu2, np.float64))
  sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(
      np.asarray(sigma2, np.float64))
  dim = mu1.shape[0]
  if (mu1.shape != (dim,) or mu2.shape != (dim,) or sigma1.shape != (dim, dim) or
      sigma2.shape != (dim, dim)):
    raise ConfigError(f"Mismatched Gaussian parameters: means {mu1.shape} and "
                      f"{mu2.shape}, covariances {sigma1.shape} and {sigma2.shape}.")
  diff_d = mu1 - mu2
  covmean = _quiet_sqrtm(sigma1 @ sigma2)
  if not np.isfinite(covmean).all():
    logging.warning("FID: sigma1 @ sigma2 is singular; adding %g to the diagonal of "
                    "both covariances.", eps)
    offset = np.eye(dim) * eps
    covmean = _quiet_sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=_MAX_IMAGINARY_DIAGONAL):
      raise ValueError(f"sqrtm(sigma1 @ sigma2) has an imaginary component of "
                       f"{np.max(np.abs(covmean.imag)):.3g}.")
    covmean = covmean.real
  return float(diff_d @ diff_d + np.trace(sigma1) + np.trace(sigma2) -
               2 * np.trace(covmean))


def fid_from_stats(stats_a: FeatureStats, stats_b: FeatureStats,
                   eps: float = 1e-6) -> float:
  """FID between two sets of accumulated feature statistics."""
  if stats_a.num_features != stats_b.num_features:
    raise ConfigError(f"FID of {stats_a.num_features}-dim against "
                      f"{stats_b.num_features}-dim features.")
  return frechet_distance(stats_a.mean, stats_a.covariance, stats_b.mean,
                          stats_b.covariance, eps=eps)


def fid_from_features(features_a, features_b, eps: float = 1e-6) -> float:
  """FID between two feature sets, shapes (N, D) and (M, D), N, M >= 2."""
  features_a, features_b = as_feature_pair(features_a, features_b)
  return fid_from_stats(FeatureStats.from_features(features_a),
                        FeatureStats.from_features(features_b), eps=eps)
