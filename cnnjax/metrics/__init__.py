"""cnnjax.metrics: the math of sample-quality metrics, on feature or logit arrays.

No models and no I/O beyond `FeatureStats.save/load`: callers extract features
(e.g. Inception pool3 activations or logits) and pass (num_samples, num_features)
arrays. Host-side float64 where precision matters (FID, KID, IS, PRDC); the classifier
two-sample test trains a small jitted MLP.
"""

from cnnjax.metrics.fid import (FeatureStats, fid_from_features, fid_from_stats,
                                frechet_distance)
from cnnjax.metrics.inception_score import inception_score
from cnnjax.metrics.kid import kid, polynomial_mmd2
from cnnjax.metrics.prdc import prdc
from cnnjax.metrics.two_sample import classifier_two_sample_test

__all__ = [
    "FeatureStats",
    "classifier_two_sample_test",
    "fid_from_features",
    "fid_from_stats",
    "frechet_distance",
    "inception_score",
    "kid",
    "polynomial_mmd2",
    "prdc",
]
