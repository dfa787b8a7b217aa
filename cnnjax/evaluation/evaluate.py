"""Sample-quality metrics of generators (and of real data) with an in-domain classifier.

`evaluate_generator` draws samples in batches (batch i from `fold_in(key(seed), i)`),
extracts the classifier's features and logits over every device and compares them with a
cached `Reference` of a real dataset split: FID, KID, Inception Score (over the
classifier's logits), precision/recall/density/coverage, the classifier two-sample test
and, for conditional generators, the classifier's accuracy on the conditioning labels.

`RunEvaluator` holds a run's extractor and reference and scores program states (during
training, and for `run.py evaluate` through `cnnjax.runs.scoring`);
`evaluate_dataset_split` scores real images of one split against another: the floor a
perfect generator reaches with as many samples.
"""

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnnjax.errors import ConfigError
from cnnjax.evaluation.features import Extractor, classification_accuracy, load_split
from cnnjax.evaluation.reference import (DEFAULT_MAX_FEATURES, Reference,
                                         load_or_compute_reference)
from cnnjax.metrics import (FeatureStats, classifier_two_sample_test, fid_from_stats,
                            inception_score, kid, prdc)
from cnnjax.train import parallel

# `generate(key, num)` -> images (num, H, W, C) in [-1, 1], or (images, labels (num,)).
GenerateFn = Callable[[jax.Array, int], Any]

# Metric settings (recorded in eval.json): KID subsets of at most this many samples,
# the PRDC neighbourhood size (k = 3, as in Kynkäänniemi et al.), Inception Score splits,
# optimiser steps of the two-sample test's classifier.
KID_SUBSET_SIZE = 1000
PRDC_K = 3
INCEPTION_SPLITS = 10
TWO_SAMPLE_STEPS = 1000

# The `eval` config section of generative runs, and its defaults.
EVAL_DEFAULTS = {
    "every": 0,               # Steps between evaluations during training (0: none).
    "extractor_workdir": "",  # A classifier run (configs/classifier.py) to score with.
    "reference_split": "test",  # The real split samples are compared with.
    "num_samples": 5000,      # Samples per evaluation.
    "batch_size": 500,        # Samples generated and scored per call.
    "max_reference_features": DEFAULT_MAX_FEATURES,  # Raw features kept for KID/PRDC.
    "reference_cache_dir": "",  # "" means <data_dir>/cnnjax_reference.
}


def score_features(features_nd: np.ndarray, logits_nk: np.ndarray,
                   labels_n: np.ndarray | None, reference: Reference, *, seed: int = 0,
                   kid_subset_size: int = KID_SUBSET_SIZE, prdc_k: int = PRDC_K,
                   inception_splits: int = INCEPTION_SPLITS,
                   two_sample_steps: int = TWO_SAMPLE_STEPS) -> dict[str, float]:
  """Every metric of samples' features (N, D) and logits (N, K) against `reference`.

  FID uses every sample; KID, PRDC and the two-sample test use at most as many samples
  as the reference keeps raw features (`reference.key["max_features"]`).

  Returns:
    fid; kid_mean, kid_std; is_mean, is_std; precision, recall, density, coverage;
    c2st_accuracy, c2st_accuracy_stderr (0.5: indistinguishable from the reference);
    with `labels_n`, class_accuracy and class_accuracy_<k> (the classifier's agreement
    with the conditioning labels, overall and per class).
  """
  real_nd = reference.features_nd
  sample_nd = features_nd[:reference.key["max_features"]]
  kid_mean, kid_std = kid(sample_nd, real_nd, seed=seed,
                          subset_size=min(kid_subset_size, len(sample_nd), len(real_nd)))
  is_mean, is_std = inception_score(logits_nk, min(inception_splits, len(logits_nk)))
  two_sample = classifier_two_sample_test(real_nd, sample_nd, seed=seed,
                                          steps=two_sample_steps)
  metrics = {"fid": fid_from_stats(FeatureStats.from_features(features_nd),
                                   reference.stats),
             "kid_mean": kid_mean, "kid_std": kid_std, "is_mean": is_mean,
             "is_std": is_std, **prdc(real_nd, sample_nd, prdc_k),
             "c2st_accuracy": two_sample["accuracy"],
             "c2st_accuracy_stderr": two_sample["accuracy_stderr"]}
  if labels_n is not None:
    metrics.update({f"class_{name}": value for name, value in
                    classification_accuracy(logits_nk, np.asarray(labels_n)).items()})
  return metrics


def check_num_samples(num_samples: int, prdc_k: int) -> None:
  if num_samples <= prdc_k:
    raise ConfigError(f"--num_samples must be more than {prdc_k} (the metrics' "
                      f"neighbourhood size), got {num_samples}; use a few thousand.")


def evaluate_generator(generate: GenerateFn, *, extractor: Extractor,
                       reference: Reference, num_samples: int, seed: int = 0,
                       batch_size: int = 500, **score_options) -> dict[str, float]:
  """Scores `num_samples` images of `generate` against `reference` (see `score_features`).

  Args:
    generate: `(key, num) -> images (num, H, W, C)` in [-1, 1], or `(images, labels
      (num,))` for a conditional generator; called with num = min(batch_size,
      num_samples) and the key `fold_in(key(seed), batch_index)`; the last batch's
      surplus is dropped.
    extractor: the classifier whose features and logits are compared.
    reference: the real split's statistics under the same extractor.
    num_samples: samples to score.
    seed: seed of the samples (and of the metrics' random subsets).
    batch_size: samples per call of `generate`.
    **score_options: passed to `score_features` (kid_subset_size, prdc_k, ...).
  """
  check_num_samples(num_samples, score_options.get("prdc_k", PRDC_K))
  base_key = jax.random.key(seed)
  batch_size = min(batch_size, num_samples)
  features, logits, labels = [], [], []
  for index, start in enumerate(range(0, num_samples, batch_size)):
    generated = generate(jax.random.fold_in(base_key, index), batch_size)
    images, batch_labels = generated if isinstance(generated, tuple) else (generated, None)
    keep = min(batch_size, num_samples - start)
    features_bd, logits_bk = extractor.features_and_logits(np.asarray(images)[:keep])
    features.append(features_bd)
    logits.append(logits_bk)
    if batch_labels is not None:
      labels.append(np.asarray(batch_labels)[:keep])
  return score_features(np.concatenate(features), np.concatenate(logits),
                        np.concatenate(labels) if labels else None, reference,
                        seed=seed, **score_options)


def _generator_of(program: Any, state: Any) -> GenerateFn:
  """`generate(key, num)` for a GAN program's state, sharded over the program's mesh.

  A conditional program (a `num_classes` attribute) is called as
  `generate(state, latents, labels)` with balanced labels: sample i of a batch has class
  i mod num_classes, so 10,000 samples of 10 classes are 1,000 of each.
  """
  mesh = program.mesh
  num_classes = getattr(program, "num_classes", None)

  def generate(key: jax.Array, num: int):
    num_padded = -(-num // mesh.size) * mesh.size
    latent_key, _ = jax.random.split(key)
    latents = jax.device_put(jax.random.normal(latent_key, (num_padded, program.latent_dim)),
                             parallel.data_sharded(mesh))
    if not num_classes:
      return parallel.to_host(program.generate(state, latents))[:num]
    labels = jnp.arange(num_padded, dtype=jnp.int32) % num_classes
    images = program.generate(state, latents, jax.device_put(labels,
                                                             parallel.data_sharded(mesh)))
    return parallel.to_host(images)[:num], np.asarray(labels)[:num]

  return generate


def eval_settings(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """A run's `eval` section (absent fields at their `EVAL_DEFAULTS`)."""
  section = config.get("eval") or {}
  return {name: section.get(name, default) for name, default in EVAL_DEFAULTS.items()}


@dataclasses.dataclass(frozen=True)
class RunEvaluator:
  """Scores a generative program's states: its extractor and reference, loaded once.

  Build one with `for_config` before training, call `evaluate` at each evaluation.
  """
  extractor: Extractor
  reference: Reference
  batch_size: int

  @classmethod
  def for_config(cls, config: ml_collections.ConfigDict, extractor: Extractor, *,
                 reference_split: str | None = None) -> "RunEvaluator":
    """The evaluator of a run's config (`eval` section) with a loaded `extractor`
    (`cnnjax.runs.scoring.run_evaluator` loads it from the run's `eval.extractor_workdir`).

    Raises:
      DatasetError: the reference split is unavailable.
    """
    settings = eval_settings(config)
    reference = load_or_compute_reference(
        extractor, dataset=config.data.name,
        split=reference_split or settings["reference_split"],
        data_dir=config.data.data_dir, image_size=config.data.image_size,
        resize=config.data.resize, max_features=settings["max_reference_features"],
        cache_dir=settings["reference_cache_dir"])
    return cls(extractor=extractor, reference=reference,
               batch_size=settings["batch_size"])

  def evaluate(self, program: Any, state: Any, *, num_samples: int, seed: int = 0
               ) -> tuple[dict[str, float], dict[str, Any]]:
    """Scores `num_samples` samples of `program.generate(state, latents)`.

    Returns:
      (metrics, settings): see `score_features`; the extractor, reference and metric
      settings the numbers depend on.
    """
    metrics = evaluate_generator(_generator_of(program, state), extractor=self.extractor,
                                 reference=self.reference, num_samples=num_samples,
                                 seed=seed, batch_size=self.batch_size)
    key, num_real = self.reference.key, len(self.reference.features_nd)
    settings = {
        "extractor_id": self.extractor.extractor_id, "num_samples": num_samples,
        "seed": seed, "reference_dataset": key["dataset"],
        "reference_split": key["split"], "image_size": key["image_size"],
        "reference_resize": key["resize"], "num_reference": self.reference.num_examples,
        "num_reference_features": num_real,
        "kid_subset_size": min(KID_SUBSET_SIZE, num_samples, num_real),
        "prdc_k": PRDC_K, "inception_splits": min(INCEPTION_SPLITS, num_samples),
        "two_sample_steps": TWO_SAMPLE_STEPS}
    return metrics, settings


def evaluate_dataset_split(extractor: Extractor, *, dataset: str, split: str = "train",
                           reference_split: str = "test", data_dir: str | None = None,
                           image_size: int, resize: str = "pad",
                           num_samples: int | None = None, seed: int = 0,
                           cache_dir: str | None = None, **score_options
                           ) -> dict[str, float]:
  """Scores real images of `split` as if generated, against `reference_split`.

  The result is the floor of each metric for a perfect generator with as many samples
  (FID and KID are biased upwards for finite samples); `class_accuracy` is the
  classifier's accuracy on `split`.

  Args:
    num_samples: a seeded random subset of `split` of this size (default: all of it).
  """
  reference = load_or_compute_reference(extractor, dataset=dataset, split=reference_split,
                                        data_dir=data_dir, image_size=image_size,
                                        resize=resize, cache_dir=cache_dir)
  images, labels = load_split(dataset, split, data_dir, image_size, resize)
  if num_samples is not None and num_samples < len(images):
    check_num_samples(num_samples, score_options.get("prdc_k", PRDC_K))
    rows = np.sort(np.random.default_rng(seed).choice(len(images), num_samples,
                                                      replace=False))
    images, labels = images[rows], None if labels is None else labels[rows]
  features_nd, logits_nk = extractor.features_and_logits(images)
  return score_features(features_nd, logits_nk, labels, reference, seed=seed,
                        **score_options)
