"""HYPE-infinity scores (Zhou et al. 2019) with bootstrap confidence intervals.

The score is the rate of errors: a generated image judged real or a real image judged
fake. 50% means people cannot tell the two apart; 0% means every image was told right.
Pooled scores are over all main-block judgments of the qualified raters; their 95%
intervals come from resampling raters with replacement (the unit of the study), per-rater
intervals from resampling that rater's judgments.
"""

from typing import Any, Sequence

import numpy as np

NUM_RESAMPLES = 10_000


def _error_counts(judgments: Sequence[dict[str, Any]], truth: str | None = None
                  ) -> tuple[int, int]:
  chosen = [j for j in judgments if truth is None or j["truth"] == truth]
  return sum(j["answer"] != j["truth"] for j in chosen), len(chosen)


def bootstrap_over_raters(errors_r: np.ndarray, counts_r: np.ndarray, *, seed: int,
                          num_resamples: int = NUM_RESAMPLES,
                          level: float = 0.95) -> tuple[float, float]:
  """Percentile interval of the pooled error rate, raters resampled with replacement.

  Args:
    errors_r, counts_r: (R,) errors and judgments of each rater.
    seed: seed of the resampling (numpy's default generator).
    num_resamples: bootstrap resamples.
    level: the interval's coverage.

  Returns:
    (low, high) of sum(errors) / sum(counts) over the resamples.
  """
  errors_r, counts_r = np.asarray(errors_r, float), np.asarray(counts_r, float)
  if len(errors_r) == 0 or counts_r.sum() == 0:
    return float("nan"), float("nan")
  rng = np.random.default_rng(seed)
  picks_br = rng.integers(0, len(errors_r), size=(num_resamples, len(errors_r)))
  counts_b = counts_r[picks_br].sum(axis=1)
  rates_b = errors_r[picks_br].sum(axis=1) / np.maximum(counts_b, 1)
  rates_b = rates_b[counts_b > 0]
  tail = (1 - level) / 2 * 100
  low, high = np.percentile(rates_b, [tail, 100 - tail])
  return float(low), float(high)


def bootstrap_one_rater(wrong_j: np.ndarray, *, seed: int,
                        num_resamples: int = NUM_RESAMPLES,
                        level: float = 0.95) -> tuple[float, float]:
  """Percentile interval of one rater's error rate, judgments resampled."""
  wrong_j = np.asarray(wrong_j, float)
  if len(wrong_j) == 0:
    return float("nan"), float("nan")
  rng = np.random.default_rng(seed)
  rates_b = wrong_j[rng.integers(0, len(wrong_j), size=(num_resamples, len(wrong_j)))
                    ].mean(axis=1)
  tail = (1 - level) / 2 * 100
  low, high = np.percentile(rates_b, [tail, 100 - tail])
  return float(low), float(high)


def _pooled(by_rater: dict[str, list[dict]], truth: str | None, seed: int) -> dict:
  counts = [_error_counts(js, truth) for js in by_rater.values()]
  errors_r = np.array([e for e, _ in counts])
  counts_r = np.array([n for _, n in counts])
  total = int(counts_r.sum())
  rate = float(errors_r.sum() / total) if total else float("nan")
  low, high = bootstrap_over_raters(errors_r, counts_r, seed=seed)
  return {"error_rate": rate, "ci95": [low, high], "judgments": total}


def study_scores(judgments: Sequence[dict[str, Any]], *, qualification_threshold: float,
                 seed: int = 0) -> dict[str, Any]:
  """Per-rater and pooled HYPE-infinity scores of a study's judgments.

  Args:
    judgments: rows of the `judgments` table joined with the image's block and source
      (dicts with rater_id, truth, answer, block, source).
    qualification_threshold: the accuracy a rater needs on the qualification block to
      count (raters who saw no qualification image always count).
    seed: seed of the bootstrap.

  Returns:
    {"pooled": {all, real, fake[, fake_by_run]}, "raters": {rater_id: {...}}, "qualified_raters",
    "excluded_raters"} with error rates and 95% intervals.
  """
  raters: dict[str, dict[str, Any]] = {}
  qualified: dict[str, list[dict]] = {}
  for index, rater_id in enumerate(sorted({j["rater_id"] for j in judgments})):
    mine = [j for j in judgments if j["rater_id"] == rater_id]
    main = [j for j in mine if j["block"] == "main"]
    quals = [j for j in mine if j["block"] == "qualification"]
    qual_accuracy = (1 - _error_counts(quals)[0] / len(quals)) if quals else None
    passes = qual_accuracy is None or qual_accuracy >= qualification_threshold
    wrong = np.array([j["answer"] != j["truth"] for j in main], float)
    errors, count = _error_counts(main)
    raters[rater_id] = {
        "judgments": count,
        "error_rate": errors / count if count else float("nan"),
        "ci95": list(bootstrap_one_rater(wrong, seed=seed + index)),
        "real_error_rate": _rate(main, "real"), "fake_error_rate": _rate(main, "fake"),
        "qualification_accuracy": qual_accuracy, "qualified": passes}
    if passes and main:
      qualified[rater_id] = main
  pooled = {"all": _pooled(qualified, None, seed),
            "real": _pooled(qualified, "real", seed + 1),
            "fake": _pooled(qualified, "fake", seed + 2)}
  sources = sorted({j["source"] for j in judgments if j["truth"] == "fake"})
  if len(sources) > 1:   # A/B: each run's fakes judged real (higher looks more real).
    pooled["fake_by_run"] = {source: _pooled(
        {r: [j for j in js if j["source"] == source] for r, js in qualified.items()},
        "fake", seed + 3 + index) for index, source in enumerate(sources)}
  return {"pooled": pooled, "raters": raters, "qualified_raters": sorted(qualified),
          "excluded_raters": sorted(set(raters) - set(qualified) - {
              r for r, v in raters.items() if v["judgments"] == 0 and v["qualified"]}),
          "num_resamples": NUM_RESAMPLES}


def _rate(judgments: Sequence[dict], truth: str) -> float:
  errors, count = _error_counts(judgments, truth)
  return errors / count if count else float("nan")
