"""Reference statistics of a dataset split: computed once per extractor, cached on disk.

A reference holds the streaming mean and covariance of the split's features (for FID)
and a random subset of the raw features, at most `max_features` of them (for KID,
precision/recall/density/coverage and the classifier two-sample test).

The cache lives in `cache_dir`, by default `<data_dir>/cnnjax_reference/`, one folder per
key (dataset, split, image size and fitting, extractor id, subset size and seed):
`key.json`, `stats.npz` (`FeatureStats.save`) and `features.npy`. A folder is written
under a temporary name and renamed when complete, so readers never see half of one.
"""

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
from typing import Any

import jax
import numpy as np
from absl import logging

from cnnjax.data.sources import resolve_data_dir
from cnnjax.evaluation.features import Extractor, load_split
from cnnjax.io.workdir import read_json, write_json_atomic
from cnnjax.metrics import FeatureStats

REFERENCE_DIR = "cnnjax_reference"
DEFAULT_MAX_FEATURES = 10_000


@dataclasses.dataclass(frozen=True)
class Reference:
  """Features of a real dataset split.

  Attributes:
    stats: mean and covariance of the features of every example of the split.
    features_nd: a random subset of those features (N <= max_features, D), float32.
    key: what the statistics depend on (dataset, split, image_size, resize,
      extractor_id, max_features, seed).
  """
  stats: FeatureStats
  features_nd: np.ndarray
  key: dict[str, Any]

  @property
  def num_examples(self) -> int:
    return self.stats.count


def reference_key(extractor: Extractor, *, dataset: str, split: str, image_size: int,
                  resize: str, max_features: int = DEFAULT_MAX_FEATURES,
                  seed: int = 0) -> dict[str, Any]:
  """Everything a reference's numbers depend on: its cache key."""
  return {"dataset": dataset, "split": split, "image_size": int(image_size),
          "resize": resize, "extractor_id": extractor.extractor_id,
          "max_features": int(max_features), "seed": int(seed)}


def _cache_folder(cache_dir: str, key: dict[str, Any]) -> str:
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
  readable = re.sub(r"[^A-Za-z0-9.-]+", "-", f"{key['dataset']}_{key['split']}")
  return os.path.join(cache_dir, f"{readable}_{key['image_size']}px_{digest}")


def _load(folder: str, key: dict[str, Any]) -> Reference | None:
  """The cached reference in `folder`, or None if absent, unreadable or of another key."""
  try:
    if read_json(os.path.join(folder, "key.json")) != key:
      return None
    return Reference(stats=FeatureStats.load(os.path.join(folder, "stats.npz")),
                     features_nd=np.load(os.path.join(folder, "features.npy")), key=key)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as error:  # A damaged cache entry: computed again.
    logging.warning("Ignoring the unreadable reference cache %s (%s).", folder, error)
    return None


def _save(folder: str, reference: Reference) -> None:
  """Writes `reference` into `folder` atomically; logs (and skips) if not writable."""
  try:
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tmp-", dir=os.path.dirname(folder))
    reference.stats.save(os.path.join(staging, "stats.npz"))
    np.save(os.path.join(staging, "features.npy"), reference.features_nd)
    write_json_atomic(os.path.join(staging, "key.json"), reference.key)
    try:
      os.rename(staging, folder)
    except OSError:  # Another process cached the same key first.
      shutil.rmtree(staging, ignore_errors=True)
  except OSError as error:
    logging.warning("Cannot cache the reference statistics in %s (%s); they will be "
                    "computed again next time.", folder, error.strerror or error)


def compute_reference(extractor: Extractor, images_nhwc: np.ndarray, key: dict[str, Any]
                      ) -> Reference:
  """The reference of `images_nhwc` (uint8 or [-1, 1]) under `key` (see `reference_key`)."""
  features_nd, _ = extractor.features_and_logits(images_nhwc)
  stats = FeatureStats.from_features(features_nd)
  if len(features_nd) > key["max_features"]:
    rows = np.random.default_rng(key["seed"]).choice(
        len(features_nd), key["max_features"], replace=False)
    features_nd = features_nd[np.sort(rows)]
  return Reference(stats=stats, features_nd=features_nd.astype(np.float32), key=key)


def load_or_compute_reference(extractor: Extractor, *, dataset: str, split: str,
                              data_dir: str | None, image_size: int, resize: str,
                              max_features: int = DEFAULT_MAX_FEATURES, seed: int = 0,
                              cache_dir: str | None = None) -> Reference:
  """The reference statistics of a dataset split, from the cache or computed and cached.

  Args:
    extractor: the feature extractor.
    dataset, split, data_dir: the TFDS dataset, split and directory.
    image_size, resize: how images are fitted before extraction (as the evaluated
      generator's training data were: see `cnnjax.data.pipeline.fit_image`).
    max_features: the most raw features kept (a seeded random subset).
    seed: seed of that subset.
    cache_dir: where references are cached; None or "" means
      `<data_dir>/cnnjax_reference`.

  Raises:
    DatasetError: the dataset or split is unavailable.
  """
  key = reference_key(extractor, dataset=dataset, split=split, image_size=image_size,
                      resize=resize, max_features=max_features, seed=seed)
  cache_dir = cache_dir or os.path.join(resolve_data_dir(data_dir), REFERENCE_DIR)
  folder = _cache_folder(cache_dir, key)
  cached = _load(folder, key)
  if cached is not None:
    logging.info("Loaded the reference statistics of %s:%s from %s.", dataset, split,
                 folder)
    return cached
  logging.info("Computing the reference statistics of %s:%s with %s.", dataset, split,
               extractor.extractor_id)
  images, _ = load_split(dataset, split, data_dir, image_size, resize)
  reference = compute_reference(extractor, images, key)
  if jax.process_index() == 0:
    _save(folder, reference)
  return reference
