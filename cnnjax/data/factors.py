"""Ground-truth factors of `shapes` as arrays: what the `factors` run kind trains on and
what attribute edits are measured against.

A record's `factors` feature (a dict of float32 scalars) becomes one float32 vector
(F,) in `FACTOR_NAMES` order; `FactorArraySource` holds a whole split in memory as
fitted uint8 images, labels and factor vectors.
"""

from typing import Any, Sequence

import numpy as np

from cnnjax.data.pipeline import fit_image
from cnnjax.data.shapes import FACTOR_RANGES
from cnnjax.data.sources import get_data_source
from cnnjax.errors import DatasetError

FACTOR_NAMES = tuple(FACTOR_RANGES)          # x, y, scale, rotation, hue
CIRCULAR_PERIODS = {"rotation": 2 * np.pi, "hue": 1.0}


def has_factors(info: Any) -> bool:
  """Whether a dataset's features include shapes' `factors` dict."""
  features = dict(info.features.items()) if info.features is not None else {}
  factors = features.get("factors")
  return factors is not None and set(FACTOR_NAMES) <= set(dict(factors.items()))


class FactorArraySource(Sequence[dict[str, np.ndarray]]):
  """A split read once: `image` (fitted uint8), `label` (int32), `factors` (F,) float32.

  Args:
    source: a random-access TFDS source of `shapes` records.
    image_size, resize: as in `cnnjax.data.pipeline.fit_image`.
  """

  def __init__(self, source: Sequence[dict[str, Any]], *, image_size: int, resize: str):
    count = len(source)
    first = fit_image(np.asarray(source[0]["image"]), image_size, resize)
    self.images = np.empty((count, *first.shape), np.uint8)
    self.labels = np.empty((count,), np.int32)
    self.factors = np.empty((count, len(FACTOR_NAMES)), np.float32)
    for index in range(count):
      record = source[index]
      self.images[index] = fit_image(np.asarray(record["image"]), image_size, resize)
      self.labels[index] = record["label"]
      self.factors[index] = [record["factors"][name] for name in FACTOR_NAMES]

  def __len__(self) -> int:
    return len(self.images)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {"image": self.images[index], "label": self.labels[index],
            "factors": self.factors[index]}


def load_factor_split(name: str, split: str, data_dir: str | None, image_size: int,
                      resize: str) -> FactorArraySource:
  """A whole split of a dataset with shapes' factors, in memory.

  Raises:
    DatasetError: the dataset or split is unavailable, or it has no `factors`.
  """
  source, info = get_data_source(name, split, data_dir or None)
  if not has_factors(info):
    raise DatasetError(f"Dataset {name!r} has no ground-truth 'factors' feature "
                       f"({', '.join(FACTOR_NAMES)}); use data.name=shapes or "
                       "shapes/tiny.")
  return FactorArraySource(source, image_size=image_size, resize=resize)
