"""Unpaired image data (CycleGAN): two image domains, each one image feature of a split
of a prepared TFDS dataset (`data.domain_a`, `data.domain_b`: `name`, `feature`,
`split`, `test_split`).

`open_domain` holds a domain's split in memory (fitted to `data.image_size`, uint8, with
the dataset's `label` when it has one); `make_unpaired_dataset` is the training pipeline:
each domain shuffled with its own seed (a new order every epoch), the two streams zipped
into global batches of `a` and `b` (b, H, W, C) float32 in [-1, 1], this process's slice.
"""

from typing import Any, Sequence

import grain
import numpy as np

from cnnjax.data.paired import feature_shape
from cnnjax.data.pipeline import fit_image, scale_to_unit_range
from cnnjax.data.sources import dataset_num_classes, get_data_source
from cnnjax.errors import ConfigError

DOMAINS = ("domain_a", "domain_b")


class DomainImages(Sequence[np.ndarray]):
  """One image feature of a split, decoded once and fitted: `images` (N, H, W, C) uint8
  and `labels` (N,) int32 or None."""

  def __init__(self, images: np.ndarray, labels: np.ndarray | None):
    self.images, self.labels = images, labels

  def __len__(self) -> int:
    return len(self.images)

  def __getitem__(self, index: int) -> np.ndarray:
    return self.images[index]

  def first(self, limit: int) -> "DomainImages":
    """The first `limit` examples (0: all)."""
    if not limit or limit >= len(self):
      return self
    return DomainImages(self.images[:limit],
                        None if self.labels is None else self.labels[:limit])


def open_domain(data_config, domain: str, split: str) -> tuple[DomainImages, dict[str, Any]]:
  """The `split` of `data_config[domain]`'s dataset feature, and its description.

  Raises:
    DatasetError: the dataset, split or feature is unavailable (the message names the
      features the dataset has).
  """
  spec = data_config[domain]
  source, info = get_data_source(spec.name, split, data_config.data_dir or None)
  shape = feature_shape(info, spec.name, spec.feature)
  num_classes = dataset_num_classes(info)
  records = [source[index] for index in range(len(source))]
  images = np.stack([fit_image(np.asarray(record[spec.feature]), data_config.image_size,
                               data_config.resize) for record in records])
  labels = (np.asarray([record["label"] for record in records], np.int32)
            if num_classes is not None else None)
  return DomainImages(images, labels), {
      "name": spec.name, "feature": spec.feature, "split": split,
      "shape": list(shape), "channels": shape[-1], "num_classes": num_classes,
      "num_examples": len(records)}


def _as_batch(pair: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
  return {"a": pair[0], "b": pair[1]}


def _scale(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  return {name: scale_to_unit_range(value) for name, value in batch.items()}


def make_unpaired_dataset(domain_a: DomainImages, domain_b: DomainImages, *, seed: int,
                          global_batch_size: int, process_index: int = 0,
                          process_count: int = 1, num_threads: int = 4,
                          prefetch: int = 8) -> grain.IterDataset:
  """An endless, checkpointable dataset of this process's slices of global batches
  `{"a": (b, H, W, C_a), "b": (b, H, W, C_b)}` in [-1, 1]: the two domains in
  independent orders (shuffle seeds `2 seed` and `2 seed + 1`), so pairings do not
  recur from epoch to epoch."""
  if global_batch_size % process_count:
    raise ConfigError(f"train.batch_size={global_batch_size} is not divisible by the "
                      f"{process_count} processes.")
  streams = [grain.MapDataset.source(images).shuffle(seed=2 * seed + index).repeat()
             for index, images in enumerate((domain_a, domain_b))]
  dataset = (grain.experimental.ZipMapDataset(streams).map(_as_batch)
             .batch(global_batch_size // process_count, drop_remainder=True))
  dataset = dataset[process_index::process_count].map(_scale)
  return dataset.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                   prefetch_buffer_size=prefetch))
