"""Sample-quality metrics against closed forms, independent implementations and toys."""

import numpy as np
import pytest
import scipy.spatial.distance
import scipy.special

from cnnjax import metrics
from cnnjax.errors import ConfigError


def _rng(seed: int = 0) -> np.random.Generator:
  return np.random.default_rng(seed)


def _correlated_gaussian(rng: np.random.Generator, num_samples: int, dim: int,
                         shift: float = 0.0) -> np.ndarray:
  mixing_dd = rng.normal(size=(dim, dim)) / np.sqrt(dim)
  return rng.normal(size=(num_samples, dim)) @ mixing_dd + shift


# FID.


def _frechet_distance_by_eigenvalues(mu1, sigma1, mu2, sigma2) -> float:
  """Independent FID: tr sqrt(S1 S2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)), via eigh."""
  eigvals1, eigvecs1 = np.linalg.eigh(sigma1)
  sqrt_sigma1 = eigvecs1 @ np.diag(np.sqrt(np.clip(eigvals1, 0, None))) @ eigvecs1.T
  product_eigvals = np.linalg.eigvalsh(sqrt_sigma1 @ sigma2 @ sqrt_sigma1)
  trace_sqrt = np.sqrt(np.clip(product_eigvals, 0, None)).sum()
  return float(np.sum((mu1 - mu2)**2) + np.trace(sigma1) + np.trace(sigma2) -
               2 * trace_sqrt)


def test_fid_of_a_feature_set_with_itself_is_zero():
  features = _correlated_gaussian(_rng(), 400, 32)
  fid = metrics.fid_from_features(features, features)
  assert abs(fid) < 1e-9 * np.trace(np.cov(features, rowvar=False))


def test_fid_of_diagonal_gaussians_equals_the_closed_form():
  rng = _rng(1)
  mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
  var1, var2 = rng.uniform(0.1, 3.0, size=8), rng.uniform(0.1, 3.0, size=8)
  # Commuting covariances: tr(S1 + S2 - 2 (S1 S2)^1/2) = sum (sqrt(s1) - sqrt(s2))^2.
  expected = np.sum((mu1 - mu2)**2) + np.sum((np.sqrt(var1) - np.sqrt(var2))**2)
  got = metrics.frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2))
  assert got == pytest.approx(expected, rel=1e-10)


def test_fid_of_commuting_rotated_gaussians_equals_the_closed_form():
  rng = _rng(2)
  rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
  var1, var2 = rng.uniform(0.1, 3.0, size=6), rng.uniform(0.1, 3.0, size=6)
  sigma1 = rotation @ np.diag(var1) @ rotation.T
  sigma2 = rotation @ np.diag(var2) @ rotation.T
  mu = rng.normal(size=6)
  expected = 4.0 + np.sum((np.sqrt(var1) - np.sqrt(var2))**2)  # |(2, 0, ..)|^2 = 4
  got = metrics.frechet_distance(mu, sigma1, mu + np.eye(6)[0] * 2.0, sigma2)
  assert got == pytest.approx(expected, rel=1e-9)


def test_fid_agrees_with_an_independent_eigenvalue_implementation():
  rng = _rng(3)
  features_a = _correlated_gaussian(rng, 300, 48)
  features_b = _correlated_gaussian(rng, 250, 48, shift=0.3)
  expected = _frechet_distance_by_eigenvalues(
      features_a.mean(0), np.cov(features_a, rowvar=False), features_b.mean(0),
      np.cov(features_b, rowvar=False))
  got = metrics.fid_from_features(features_a, features_b)
  assert got == pytest.approx(expected, rel=1e-6)


def test_fid_of_rank_deficient_features_is_finite():
  rng = _rng(4)  # Fewer samples than dims: singular covariances.
  fid = metrics.fid_from_features(rng.normal(size=(10, 32)),
                                  rng.normal(size=(12, 32)) + 1.0)
  assert np.isfinite(fid) and fid > 0


def test_frechet_distance_adds_eps_when_the_square_root_is_not_finite():
  # sqrtm([[0, 1], [0, 0]]) is infinite; with eps * I added to both matrices
  # tr sqrtm = 2 sqrt(eps (1 + eps)), as pytorch-fid computes it.
  nilpotent = np.array([[0.0, 1.0], [0.0, 0.0]])
  got = metrics.frechet_distance(np.zeros(2), nilpotent, np.zeros(2), np.eye(2),
                                 eps=1e-6)
  assert got == pytest.approx(2.0 - 4.0 * np.sqrt(1e-6 * (1 + 1e-6)), rel=1e-9)


def test_frechet_distance_raises_on_a_large_imaginary_component():
  with pytest.raises(ValueError, match="imaginary component"):
    metrics.frechet_distance(np.zeros(2), np.diag([-1.0, 1.0]), np.zeros(2),
                             np.eye(2))


def test_fid_rejects_mismatched_dims():
  with pytest.raises(ConfigError, match="dims"):
    metrics.fid_from_features(np.zeros((5, 3)), np.zeros((5, 4)))


def test_streaming_stats_equal_numpy_mean_and_cov_in_float64():
  # A large offset makes naive sum-of-squares statistics lose most digits.
  features = _correlated_gaussian(_rng(5), 257, 12) + 1e4
  batches = np.split(features, [1, 1, 40, 100, 180])  # Includes an empty batch.
  first = metrics.FeatureStats.zeros(12)
  for batch in batches[:3]:
    first = first.update(batch)
  second = metrics.FeatureStats.zeros(12)
  for batch in batches[3:]:
    second = second.update(batch)
  stats = first.merge(second)
  assert stats.count == 257
  np.testing.assert_allclose(stats.mean, features.mean(axis=0), rtol=1e-14)
  np.testing.assert_allclose(stats.covariance, np.cov(features, rowvar=False),
                             rtol=1e-9, atol=1e-9)


def test_feature_stats_round_trip_through_npz(tmp_path):
  features = _rng(6).normal(size=(20, 5))
  stats = metrics.FeatureStats.from_features(features)
  path = tmp_path / "stats.npz"
  stats.save(path)
  loaded = metrics.FeatureStats.load(path)
  assert loaded.count == 20
  np.testing.assert_array_equal(loaded.mean, stats.mean)
  np.testing.assert_array_equal(loaded.covariance, stats.covariance)
  with np.load(path) as arrays:  # pytorch-fid's keys for reference statistics.
    np.testing.assert_allclose(arrays["sigma"], np.cov(features, rowvar=False))
  assert metrics.fid_from_stats(loaded, stats) == pytest.approx(0.0, abs=1e-10)


def test_feature_stats_need_two_samples_for_a_covariance():
  with pytest.raises(ConfigError, match="at least 2"):
    _ = metrics.FeatureStats.from_features(np.ones((1, 3))).covariance


# KID.


def test_polynomial_mmd2_matches_the_explicit_u_statistic():
  rng = _rng(7)
  x, y = rng.normal(size=(6, 3)), rng.normal(size=(5, 3)) + 0.5
  kernel = lambda a, b: (a @ b / 3 + 1)**3
  within_x = sum(kernel(x[i], x[j]) for i in range(6) for j in range(6) if i != j)
  within_y = sum(kernel(y[i], y[j]) for i in range(5) for j in range(5) if i != j)
  cross = sum(kernel(x[i], y[j]) for i in range(6) for j in range(5))
  expected = within_x / 30 + within_y / 20 - 2 * cross / 30
  assert metrics.polynomial_mmd2(x, y) == pytest.approx(expected, rel=1e-12)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_shifted_ones():
  rng = _rng(8)
  features_a, features_b = rng.normal(size=(600, 16)), rng.normal(size=(600, 16))
  same_mean, _ = metrics.kid(features_a, features_b, num_subsets=20, subset_size=200)
  shifted_mean, shifted_std = metrics.kid(features_a, features_b + 1.0,
                                          num_subsets=20, subset_size=200)
  assert abs(same_mean) < 0.02
  assert shifted_mean > 1.0 and shifted_mean > 10 * shifted_std


def test_kid_estimator_is_unbiased_while_the_v_statistic_is_not():
  rng = _rng(10)
  unbiased, biased = [], []
  for _ in range(400):
    x, y = rng.normal(size=(20, 8)), rng.normal(size=(20, 8))
    unbiased.append(metrics.polynomial_mmd2(x, y))
    biased.append(metrics.polynomial_mmd2(x, y, unbiased=False))
  standard_error = np.std(unbiased) / np.sqrt(len(unbiased))
  assert abs(np.mean(unbiased)) < 4 * standard_error
  assert np.mean(biased) > 10 * np.std(biased) / np.sqrt(len(biased))


def test_kid_is_deterministic_from_the_seed():
  rng = _rng(11)
  features_a, features_b = rng.normal(size=(50, 4)), rng.normal(size=(60, 4))
  first = metrics.kid(features_a, features_b, num_subsets=5, subset_size=30, seed=3)
  again = metrics.kid(features_a, features_b, num_subsets=5, subset_size=30, seed=3)
  other = metrics.kid(features_a, features_b, num_subsets=5, subset_size=30, seed=4)
  assert first == again and first != other


def test_kid_rejects_subsets_larger_than_the_sample():
  with pytest.raises(ConfigError, match="subset_size"):
    metrics.kid(np.zeros((50, 4)), np.zeros((40, 4)), subset_size=45)
  with pytest.raises(ConfigError, match="dims"):
    metrics.kid(np.zeros((50, 4)), np.zeros((50, 5)), subset_size=10)


# Inception Score.


def test_inception_score_of_uniform_predictions_is_one():
  mean, std = metrics.inception_score(np.zeros((100, 10)))
  assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_of_confident_evenly_spread_predictions_is_num_classes():
  num_classes, num_splits = 7, 4
  labels = np.arange(num_classes * num_splits * 3) % num_classes
  one_hot = np.eye(num_classes)[labels]
  # Unshuffled, every chunk holds each class equally often.
  mean, std = metrics.inception_score(60.0 * one_hot, num_splits, shuffle_seed=None)
  assert mean == pytest.approx(num_classes, rel=1e-9) and std < 1e-9
  # Exact zeros in probabilities contribute 0, not 0 * log(0).
  mean, _ = metrics.inception_score(one_hot, num_splits, from_probabilities=True,
                                    shuffle_seed=None)
  assert mean == pytest.approx(num_classes, rel=1e-12)


def test_inception_score_matches_torch_fidelitys_formula():
  logits = _rng(12).normal(size=(503, 12)) * 3
  shuffled = logits[np.random.RandomState(2020).permutation(503)]
  probs = scipy.special.softmax(shuffled, axis=1)
  scores = []
  for split in range(10):
    chunk = probs[split * 503 // 10:(split + 1) * 503 // 10]
    kl = chunk * (np.log(chunk) - np.log(chunk.mean(axis=0, keepdims=True)))
    scores.append(np.exp(kl.sum(axis=1).mean()))
  mean, std = metrics.inception_score(logits)
  assert mean == pytest.approx(np.mean(scores), rel=1e-10)
  assert std == pytest.approx(np.std(scores), rel=1e-8)


def test_inception_score_is_finite_for_extreme_logits():
  logits = np.eye(5)[np.arange(50) % 5] * 1e4
  mean, _ = metrics.inception_score(logits, 5, shuffle_seed=None)
  assert mean == pytest.approx(5.0, rel=1e-9)


def test_inception_score_rejects_bad_inputs():
  with pytest.raises(ConfigError, match="summing to 1"):
    metrics.inception_score(np.ones((20, 4)), 2, from_probabilities=True)
  with pytest.raises(ConfigError, match="num_splits"):
    metrics.inception_score(np.zeros((5, 4)), 10)


# Precision, recall, density, coverage.


def _reference_prdc(real, fake, k):
  """The `prdc` package's compute_prdc, with scipy distances."""
  kth = lambda distances: np.sort(distances, axis=1)[:, k]
  real_radii = kth(scipy.spatial.distance.cdist(real, real))
  fake_radii = kth(scipy.spatial.distance.cdist(fake, fake))
  real_fake = scipy.spatial.distance.cdist(real, fake)
  inside = real_fake < real_radii[:, None]
  return {"precision": inside.any(axis=0).mean(),
          "recall": (real_fake < fake_radii[None, :]).any(axis=1).mean(),
          "density": inside.sum(axis=0).mean() / k,
          "coverage": (real_fake.min(axis=1) < real_radii).mean()}


def test_prdc_of_identical_sets_is_one():
  features = _rng(13).normal(size=(200, 8))
  assert metrics.prdc(features, features.copy()) == pytest.approx(
      {"precision": 1.0, "recall": 1.0, "density": 1.0, "coverage": 1.0})


def test_prdc_of_far_away_fakes_is_zero():
  rng = _rng(14)
  real, fake = rng.normal(size=(100, 8)), rng.normal(size=(120, 8)) + 100.0
  assert metrics.prdc(real, fake) == pytest.approx(
      {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0})


def test_prdc_precision_is_the_fraction_of_fakes_on_the_real_manifold():
  rng = _rng(15)
  real = rng.uniform(size=(1000, 2))
  fake = np.concatenate([real[:300], rng.uniform(size=(300, 2)) + 10.0])
  assert metrics.prdc(real, fake)["precision"] == 0.5
  # Fresh draws of the real distribution land on its k-NN manifold almost always.
  fake = np.concatenate([rng.uniform(size=(500, 2)), rng.uniform(size=(500, 2)) + 10])
  assert metrics.prdc(real, fake)["precision"] == pytest.approx(0.5, abs=0.04)


def test_prdc_blocks_agree_with_the_reference_package():
  rng = _rng(16)
  real, fake = rng.normal(size=(150, 6)), rng.normal(size=(130, 6)) * 1.3 + 0.2
  expected = _reference_prdc(real, fake, k=5)
  assert metrics.prdc(real, fake, k=5, block_size=17) == pytest.approx(expected)
  assert metrics.prdc(real, fake, k=5, block_size=1000) == pytest.approx(expected)


def test_prdc_needs_more_samples_than_neighbours():
  with pytest.raises(ConfigError, match="more than 3 samples"):
    metrics.prdc(np.zeros((3, 2)), np.zeros((10, 2)))


# Classifier two-sample test. One architecture and one data shape: one compilation.

_C2ST_ARGS = dict(hidden=32, num_hidden_layers=2, steps=300, lr=3e-3,
                  weight_decay=1e-4, batch_size_per_class=64, holdout_fraction=0.3)


def test_two_sample_test_cannot_tell_two_draws_of_one_gaussian_apart():
  rng = _rng(17)
  real, also_real = rng.normal(size=(500, 16)), rng.normal(size=(500, 16))
  result = metrics.classifier_two_sample_test(real, also_real, seed=1, **_C2ST_ARGS)
  assert abs(result["accuracy"] - 0.5) < 0.1
  assert result["p_value"] > 0.01
  assert (result["num_train_real"], result["num_heldout_real"]) == (350, 150)
  assert (result["num_train_fake"], result["num_heldout_fake"]) == (350, 150)
  # Image-shaped inputs are flattened; the same seed gives the same result.
  as_images = metrics.classifier_two_sample_test(
      real.reshape(500, 4, 4, 1), also_real.reshape(500, 4, 4, 1), seed=1,
      **_C2ST_ARGS)
  assert as_images == result


def test_two_sample_test_separates_real_from_noise():
  rng = _rng(18)
  real = rng.normal(size=(500, 16))
  noise = rng.uniform(-1.0, 1.0, size=(500, 16)) + 2.0
  result = metrics.classifier_two_sample_test(real, noise, seed=1, **_C2ST_ARGS)
  assert result["accuracy"] > 0.95
  assert result["p_value"] < 1e-6


def test_two_sample_test_rejects_a_split_without_held_out_samples():
  with pytest.raises(ConfigError, match="holdout_fraction"):
    metrics.classifier_two_sample_test(np.zeros((10, 2)), np.zeros((10, 2)),
                                       holdout_fraction=0.01)
