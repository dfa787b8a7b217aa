"""Scores of image-to-image translations on a test split.

* paired tasks: L1, PSNR and SSIM of each translation against its ground truth
  (`cnnjax.metrics.paired`, dm-pix);
* with an extractor (a classifier trained by the project on the target domain,
  `configs/classifier.py`): FID and KID of the translations against real target-domain
  images in its feature space, and the task score in the spirit of pix2pix's FCN-score:
  the classifier's accuracy at recognising the source's class in its translation
  (`task_accuracy`), beside its accuracy on the real targets (`task_accuracy_real`, the
  ceiling: on the paired targets, or on the reference images given their own labels).
"""

from typing import Any

import numpy as np

from cnnjax.evaluation.features import Extractor, classification_accuracy
from cnnjax.metrics.fid import fid_from_features
from cnnjax.metrics.kid import kid
from cnnjax.metrics.paired import paired_scores

KID_SUBSETS = 100


def score_translations(outputs_nhwc: np.ndarray, *, targets_nhwc: np.ndarray | None,
                       reference_nhwc: np.ndarray | None = None,
                       labels_n: np.ndarray | None = None,
                       reference_labels_n: np.ndarray | None = None,
                       extractor: Extractor | None = None) -> dict[str, float]:
  """Every score of `outputs_nhwc` (in [-1, 1]) that the inputs allow.

  Args:
    outputs_nhwc: the translations of N test sources.
    targets_nhwc: their ground truths (paired tasks), or None.
    reference_nhwc: real target-domain images for FID/KID (default: `targets_nhwc`).
    labels_n: the sources' classes, for the task score.
    reference_labels_n: the classes of `reference_nhwc` (unpaired tasks), for the
      ceiling `task_accuracy_real` (paired tasks use `labels_n` on the targets).
    extractor: the target domain's classifier (None: no FID, KID, task score).
  """
  metrics: dict[str, float] = {}
  if targets_nhwc is not None:
    metrics.update(paired_scores(outputs_nhwc, targets_nhwc))
  if extractor is None:
    return metrics
  reference = targets_nhwc if reference_nhwc is None else reference_nhwc
  features, logits = extractor.features_and_logits(outputs_nhwc)
  real_features, real_logits = extractor.features_and_logits(reference)
  metrics["fid"] = fid_from_features(features, real_features)
  subset = min(len(features), len(real_features), 1000)
  metrics["kid"], metrics["kid_std"] = kid(features, real_features,
                                           num_subsets=KID_SUBSETS, subset_size=subset)
  if labels_n is not None:
    metrics["task_accuracy"] = classification_accuracy(logits, labels_n)["accuracy"]
  real_labels = labels_n if reference_nhwc is None else reference_labels_n
  if real_labels is not None:
    metrics["task_accuracy_real"] = classification_accuracy(
        real_logits, real_labels)["accuracy"]
  return metrics


def settings_of(extractor: Extractor | None, **fields: Any) -> dict[str, Any]:
  """The settings recorded beside the scores in eval.json."""
  return {"extractor_id": extractor.extractor_id if extractor else None, **fields}
