"""Kernel Inception Distance (Bińkowski et al., 2018), as torch-fidelity computes it.

KID is the squared maximum mean discrepancy between two feature distributions under
the cubic polynomial kernel k(x, y) = (x.y / D + 1)^3, estimated without bias on many
random subsets of equal size; the mean and standard deviation over subsets are
reported. Unlike FID, the estimator's expectation does not depend on the sample size
and is exactly 0 when both distributions are equal (so small negative values occur).
"""

import numpy as np

# Kernel matrices between whole feature sets are computed once and indexed per subset
# when they fit in this many bytes (float64); larger ones are computed per subset.
MAX_CACHED_KERNEL_BYTES = 1 << 29

from cnnjax.errors import ConfigError
from cnnjax.metrics.feature_arrays import as_feature_pair


def polynomial_kernel(features_nd: np.ndarray, features_md: np.ndarray,
                      degree: int = 3, coef0: float = 1.0) -> np.ndarray:
  """k(x, y) = (x.y / D + coef0)^degree for all pairs, shape (N, M)."""
  num_features = features_nd.shape[1]
  return (features_nd @ features_md.T / num_features + coef0)**degree


def mmd2_from_kernels(kernel_xx: np.ndarray, kernel_xy: np.ndarray,
                      kernel_yy: np.ndarray, unbiased: bool = True) -> float:
  """Squared MMD from the three kernel matrices of samples X (N) and Y (M).

  Args:
    kernel_xx: k(x_i, x_j), shape (N, N).
    kernel_xy: k(x_i, y_j), shape (N, M).
    kernel_yy: k(y_i, y_j), shape (M, M).
    unbiased: True for the U-statistic (Gretton et al. 2012, eq. 3; torch-fidelity's
      'unbiased'), which leaves the diagonals k(x_i, x_i), k(y_j, y_j) out of the
      within-sample means; False for the biased V-statistic, which keeps them and
      so overestimates MMD² by about (E k(x, x) - E k(x, x')) (1/N + 1/M).

  Returns:
    The estimate of MMD²(P_X, P_Y).
  """
  num_x, num_y = kernel_xy.shape
  if unbiased:
    within_x = (kernel_xx.sum() - np.trace(kernel_xx)) / (num_x * (num_x - 1))
    within_y = (kernel_yy.sum() - np.trace(kernel_yy)) / (num_y * (num_y - 1))
  else:
    within_x = kernel_xx.mean()
    within_y = kernel_yy.mean()
  return float(within_x + within_y - 2 * kernel_xy.mean())


def polynomial_mmd2(features_x, features_y, unbiased: bool = True,
                    degree: int = 3, coef0: float = 1.0) -> float:
  """Squared MMD under the polynomial kernel between features (N, D) and (M, D)."""
  features_x, features_y = as_feature_pair(features_x, features_y,
                                           ("features_x", "features_y"))
  if unbiased and min(len(features_x), len(features_y)) < 2:
    raise ConfigError("The unbiased MMD² needs at least 2 samples on each side.")
  return mmd2_from_kernels(
      polynomial_kernel(features_x, features_x, degree, coef0),
      polynomial_kernel(features_x, features_y, degree, coef0),
      polynomial_kernel(features_y, features_y, degree, coef0), unbiased=unbiased)


def kid(features_a, features_b, num_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
  """Kernel Inception Distance between two feature sets.

  Each of `num_subsets` rounds draws `subset_size` samples without replacement from
  each set (numpy's legacy RandomState(seed), as torch-fidelity, so the subsets are
  theirs for the same seed and argument order) and computes the unbiased MMD² with
  the cubic polynomial kernel, in float64.

  Args:
    features_a: features of the first set, shape (N, D), e.g. generated images.
    features_b: features of the second set, shape (M, D), e.g. real images.
    num_subsets: number of random subsets.
    subset_size: samples per subset and side; at most min(N, M).
    seed: seed of the subset draws.

  Returns:
    (mean, std) of the MMD² estimates over subsets (std with ddof=0, as
    torch-fidelity).

  Raises:
    ConfigError: on mismatched dims, too few samples or bad subset arguments.
  """
  features_a, features_b = as_feature_pair(features_a, features_b)
  if num_subsets < 1:
    raise ConfigError(f"KID needs num_subsets >= 1, got {num_subsets}.")
  if subset_size < 2:
    raise ConfigError(f"KID needs subset_size >= 2, got {subset_size}.")
  num_a, num_b = len(features_a), len(features_b)
  if subset_size > min(num_a, num_b):
    raise ConfigError(f"KID subset_size {subset_size} exceeds the number of samples "
                      f"({num_a} and {num_b}): lower subset_size or add samples.")
  rng = np.random.RandomState(seed)
  kernel_aa = _KernelBlocks(features_a, features_a)
  kernel_ab = _KernelBlocks(features_a, features_b)
  kernel_bb = _KernelBlocks(features_b, features_b)
  mmd2_s = np.zeros(num_subsets)
  for subset in range(num_subsets):
    rows_a = rng.choice(num_a, subset_size, replace=False)
    rows_b = rng.choice(num_b, subset_size, replace=False)
    mmd2_s[subset] = mmd2_from_kernels(kernel_aa(rows_a, rows_a),
                                       kernel_ab(rows_a, rows_b),
                                       kernel_bb(rows_b, rows_b))
  return float(np.mean(mmd2_s)), float(np.std(mmd2_s))


class _KernelBlocks:
  """`polynomial_kernel(x[rows], y[cols])`, from one whole kernel matrix when it is
  small enough (subsets of a set that is not much larger than them share most of
  their pairs), else computed for each call."""

  def __init__(self, features_x: np.ndarray, features_y: np.ndarray):
    self._x, self._y = features_x, features_y
    fits = len(features_x) * len(features_y) * 8 <= MAX_CACHED_KERNEL_BYTES
    self._whole = polynomial_kernel(features_x, features_y) if fits else None

  def __call__(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    if self._whole is None:
      return polynomial_kernel(self._x[rows], self._y[cols])
    return self._whole[np.ix_(rows, cols)]
