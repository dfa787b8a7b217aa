"""Precision, recall, density and coverage of generated samples on k-NN manifolds.

Precision and recall are the improved metrics of Kynkäänniemi et al. (2019): each
sample set is approximated by the union of balls around its points, each ball reaching
the point's k-th nearest neighbour in its own set. Precision is the fraction of fake
points inside the real manifold, recall the fraction of real points inside the fake
one. Density and coverage (Naeem et al., 2020) count, respectively, how many real
balls contain each fake point (divided by k), and the fraction of real balls that
contain at least one fake point. The definitions, including the strict inequalities
and counting each point as its own 0-th neighbour, are those of the reference `prdc`
package.

Distances are computed in float64 on the host in row blocks, so only a
(block_size, N) slice of any distance matrix exists at a time (10,000 x 10,000
samples need ~80 MB per block of 1,024 rows). Squared distances are compared with
squared radii, which orders points exactly as the distances themselves.
"""

from typing import Iterator

import numpy as np

from cnnjax.errors import ConfigError
from cnnjax.metrics.feature_arrays import as_feature_pair


def _squared_distance_blocks(rows_nd: np.ndarray, columns_md: np.ndarray,
                             block_size: int) -> Iterator[tuple[slice, np.ndarray]]:
  """Yields (row slice, squared Euclidean distances of those rows, shape (b, M))."""
  row_norms_n = np.einsum("nd,nd->n", rows_nd, rows_nd)
  column_norms_m = np.einsum("md,md->m", columns_md, columns_md)
  for start in range(0, rows_nd.shape[0], block_size):
    rows = slice(start, min(start + block_size, rows_nd.shape[0]))
    squared_bm = (row_norms_n[rows, None] + column_norms_m[None, :] -
                  2 * rows_nd[rows] @ columns_md.T)
    # The expansion can cancel to slightly negative values for near-equal points.
    np.maximum(squared_bm, 0.0, out=squared_bm)
    yield rows, squared_bm


def squared_knn_radii(features_nd: np.ndarray, k: int,
                      block_size: int = 1024) -> np.ndarray:
  """Squared distance from each point to its k-th nearest other point, shape (N,).

  As in `prdc`, the point itself is the 0-th neighbour (distance 0), so exact
  duplicates count as neighbours at distance 0.
  """
  radii_n = np.empty(features_nd.shape[0])
  for rows, squared_bn in _squared_distance_blocks(features_nd, features_nd,
                                                   block_size):
    block_rows = np.arange(squared_bn.shape[0])
    squared_bn[block_rows, block_rows + rows.start] = 0.0
    radii_n[rows] = np.partition(squared_bn, k, axis=1)[:, k]
  return radii_n


def prdc(real_features, fake_features, k: int = 3,
         block_size: int = 1024) -> dict[str, float]:
  """Precision, recall, density and coverage of fake against real features.

  Args:
    real_features: features of real samples, shape (N, D).
    fake_features: features of generated samples, shape (M, D).
    k: the neighbourhood size defining each point's ball (3 in both papers' main
      experiments; Naeem et al. recommend 5 for density and coverage).
    block_size: rows of each distance matrix computed at once.

  Returns:
    {"precision", "recall", "density", "coverage"}: precision, recall and coverage
    in [0, 1]; density in [0, N / k], with expectation 1 when fake and real follow
    one distribution.

  Raises:
    ConfigError: on mismatched dims, bad k, or fewer than k + 1 samples in a set.
  """
  real_nd, fake_md = as_feature_pair(real_features, fake_features,
                                     ("real_features", "fake_features"))
  if k < 1 or block_size < 1:
    raise ConfigError(f"prdc needs k >= 1 and block_size >= 1, got k={k}, "
                      f"block_size={block_size}.")
  if min(len(real_nd), len(fake_md)) <= k:
    raise ConfigError(f"prdc with k={k} needs more than {k} samples per set, got "
                      f"{len(real_nd)} real and {len(fake_md)} fake.")
  real_radii_n = squared_knn_radii(real_nd, k, block_size)
  fake_radii_m = squared_knn_radii(fake_md, k, block_size)

  real_balls_containing_m = np.zeros(len(fake_md), dtype=np.int64)
  real_in_fake_manifold_n = np.zeros(len(real_nd), dtype=bool)
  real_ball_covered_n = np.zeros(len(real_nd), dtype=bool)
  for rows, squared_bm in _squared_distance_blocks(real_nd, fake_md, block_size):
    inside_real_ball_bm = squared_bm < real_radii_n[rows, None]
    real_balls_containing_m += inside_real_ball_bm.sum(axis=0)
    real_in_fake_manifold_n[rows] = (squared_bm < fake_radii_m[None, :]).any(axis=1)
    real_ball_covered_n[rows] = inside_real_ball_bm.any(axis=1)
  return {
      "precision": float((real_balls_containing_m > 0).mean()),
      "recall": float(real_in_fake_manifold_n.mean()),
      "density": float(real_balls_containing_m.mean() / k),
      "coverage": float(real_ball_covered_n.mean()),
  }
