"""Whole dataset splits in memory, fitted to a resolution as in training (evaluation,
held-out ELBOs, editing and the real images of human evaluation)."""

import numpy as np

from cnnjax.data.pipeline import InMemorySource
from cnnjax.data.sources import dataset_num_classes, get_data_source


def load_split(name: str, split: str, data_dir: str | None, image_size: int,
               resize: str) -> tuple[np.ndarray, np.ndarray | None]:
  """A whole dataset split in memory, fitted to `image_size` as in training.

  Returns:
    images (N, image_size, image_size, C) uint8 and labels (N,) int32, or None when the
    dataset has no `label` class feature.

  Raises:
    DatasetError: the dataset or split is unavailable.
  """
  source, info = get_data_source(name, split, data_dir or None)
  has_label = dataset_num_classes(info) is not None
  examples = InMemorySource(source, image_size=image_size, resize=resize,
                            has_label=has_label)
  records = [examples[index] for index in range(len(examples))]
  images = np.stack([record["image"] for record in records])
  labels = np.asarray([record["label"] for record in records]) if has_label else None
  return images, labels
