"""Inception Score (Salimans et al., 2016), as torch-fidelity computes it.

  IS = exp(E_x KL(p(y|x) || p(y))),

evaluated on each of `num_splits` consecutive chunks of the (optionally shuffled)
samples, with p(y) the mean prediction of the chunk; the mean and standard deviation
over chunks are reported. Everything is float64 on the host and in log space:
log p(y|x) comes from a log-softmax of the logits and log p(y) from a logsumexp of
those, so predictions that underflow to 0 contribute exactly 0 instead of 0 * inf.
"""

import numpy as np
import scipy.special

from cnnjax.errors import ConfigError
from cnnjax.metrics.feature_arrays import as_feature_matrix

# Rows of `probs` may deviate this much from summing to 1 (float32 softmax outputs).
_PROBABILITY_SUM_TOLERANCE = 1e-3


def _log_probabilities(logits_or_probs_nc: np.ndarray,
                       from_probabilities: bool) -> np.ndarray:
  """log p(y|x), shape (N, C), from logits or from probabilities."""
  if not from_probabilities:
    return scipy.special.log_softmax(logits_or_probs_nc, axis=1)
  probs_nc = logits_or_probs_nc
  if (probs_nc < 0).any() or not np.allclose(
      probs_nc.sum(axis=1), 1.0, atol=_PROBABILITY_SUM_TOLERANCE):
    raise ConfigError("from_probabilities=True needs non-negative rows summing to 1; "
                      "pass logits with from_probabilities=False instead.")
  probs_nc = probs_nc / probs_nc.sum(axis=1, keepdims=True)
  with np.errstate(divide="ignore"):
    return np.log(probs_nc)


def inception_score(logits_or_probs, num_splits: int = 10, *,
                    from_probabilities: bool = False,
                    shuffle_seed: int | None = 2020) -> tuple[float, float]:
  """Inception Score of classifier predictions.

  Args:
    logits_or_probs: class logits (default) or probabilities, shape (N, C).
    num_splits: number of chunks; chunk i holds samples [i N / S, (i + 1) N / S).
    from_probabilities: whether the input rows are probabilities (non-negative,
      summing to 1) rather than logits.
    shuffle_seed: samples are permuted with numpy's legacy RandomState(seed) before
      splitting, as torch-fidelity does with its default seed 2020; None keeps the
      given order.

  Returns:
    (mean, std) of the per-chunk scores (std with ddof=0). Each score lies in
    [1, C]: 1 when every prediction is the same, C when predictions are confident
    and spread evenly over the classes.

  Raises:
    ConfigError: if the input is not (N, C) or there are fewer samples than chunks.
  """
  inputs_nc = as_feature_matrix(logits_or_probs, "logits_or_probs")
  num_samples = inputs_nc.shape[0]
  if num_splits < 1 or num_samples < num_splits:
    raise ConfigError(f"Inception Score with num_splits={num_splits} needs at least "
                      f"that many samples (and >= 1), got {num_samples}.")
  if shuffle_seed is not None:
    inputs_nc = inputs_nc[np.random.RandomState(shuffle_seed).permutation(num_samples)]
  log_p_nc = _log_probabilities(inputs_nc, from_probabilities)
  scores = []
  for split in range(num_splits):
    chunk = slice(split * num_samples // num_splits,
                  (split + 1) * num_samples // num_splits)
    log_p_chunk = log_p_nc[chunk]
    log_marginal_c = (scipy.special.logsumexp(log_p_chunk, axis=0) -
                      np.log(log_p_chunk.shape[0]))
    p_chunk = np.exp(log_p_chunk)
    # Where p(y|x) == 0 the KL term is 0 (log p may be -inf there: ignore the nan).
    with np.errstate(invalid="ignore"):
      kl_terms = np.where(p_chunk > 0, p_chunk * (log_p_chunk - log_marginal_c), 0.0)
    scores.append(np.exp(kl_terms.sum(axis=1).mean()))
  return float(np.mean(scores)), float(np.std(scores))
