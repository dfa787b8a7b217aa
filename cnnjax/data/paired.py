"""Paired image data (image-to-image translation): two image features of one dataset.

`image_features` checks that a prepared TFDS dataset has the features a config names;
`make_paired_dataset` is the training pipeline (seeded shuffle, a new order every epoch,
this process's slice of every global batch, images scaled to [-1, 1]) yielding `source`,
`target` and, when the dataset has one, `label`; `load_pairs` holds a whole split in
memory for evaluation, grids and `run.py translate`.
"""

from typing import Any, Sequence

import grain
import numpy as np
import tensorflow_datasets as tfds

from cnnjax.data.pipeline import fit_image, scale_to_unit_range
from cnnjax.data.sources import dataset_num_classes, get_data_source
from cnnjax.errors import ConfigError, DatasetError


def _image_features(info: tfds.core.DatasetInfo) -> dict[str, tuple[int, int, int]]:
  features = info.features
  return {name: tuple(feature.shape) for name, feature in features.items()
          if isinstance(feature, tfds.features.Image)}


def feature_shape(info: tfds.core.DatasetInfo, name: str, feature: str
                  ) -> tuple[int, int, int]:
  """The (H, W, C) of image feature `feature` of dataset `name`.

  Raises:
    DatasetError: no such image feature (the message lists the dataset's features).
  """
  images = _image_features(info)
  if feature not in images:
    raise DatasetError(
        f"Dataset {name!r} has no image feature {feature!r}; its features are "
        f"{', '.join(sorted(info.features.keys()))} (image features: "
        f"{', '.join(sorted(images)) or 'none'}); set the config's feature to one of them.")
  shape = images[feature]
  if len(shape) != 3 or any(dim is None for dim in shape):
    raise DatasetError(f"Feature {feature!r} of {name!r} has shape {shape}, not a fixed "
                       "(height, width, channels); use fixed-size images.")
  return shape


class PairedSource(Sequence[dict[str, np.ndarray]]):
  """Two image features (and the label) of a split, decoded once and fitted, uint8."""

  def __init__(self, source: Sequence[dict[str, Any]], *, source_feature: str,
               target_feature: str, image_size: int, resize: str, has_label: bool):
    fit = lambda record, feature: fit_image(np.asarray(record[feature]), image_size,
                                            resize)
    records = [source[index] for index in range(len(source))]
    self.sources = np.stack([fit(record, source_feature) for record in records])
    self.targets = np.stack([fit(record, target_feature) for record in records])
    self.labels = (np.asarray([record["label"] for record in records], np.int32)
                   if has_label else None)

  def __len__(self) -> int:
    return len(self.sources)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    example = {"source": self.sources[index], "target": self.targets[index]}
    if self.labels is not None:
      example["label"] = self.labels[index]
    return example


def open_pairs(data_config, split: str) -> tuple[PairedSource, dict[str, Any]]:
  """The split of `data_config.name` as a `PairedSource`, and its description.

  Raises:
    DatasetError: the dataset, split or one of the features is unavailable.
  """
  source, info = get_data_source(data_config.name, split, data_config.data_dir or None)
  shapes = {feature: feature_shape(info, data_config.name, feature)
            for feature in (data_config.source_feature, data_config.target_feature)}
  num_classes = dataset_num_classes(info)
  pairs = PairedSource(source, source_feature=data_config.source_feature,
                       target_feature=data_config.target_feature,
                       image_size=data_config.image_size, resize=data_config.resize,
                       has_label=num_classes is not None)
  return pairs, {
      "name": data_config.name, "split": split,
      "source_feature": data_config.source_feature,
      "target_feature": data_config.target_feature,
      "source_shape": list(shapes[data_config.source_feature]),
      "target_shape": list(shapes[data_config.target_feature]),
      "image_shape": [data_config.image_size, data_config.image_size,
                      shapes[data_config.target_feature][-1]],
      "source_channels": shapes[data_config.source_feature][-1],
      "num_classes": num_classes}


def _scale(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  return {name: scale_to_unit_range(value) if name != "label" else value
          for name, value in batch.items()}


def make_paired_dataset(source: PairedSource, *, seed: int, global_batch_size: int,
                        process_index: int = 0, process_count: int = 1,
                        num_threads: int = 4, prefetch: int = 8) -> grain.IterDataset:
  """An endless, checkpointable dataset of this process's slices of global batches:
  `source`, `target` (b, H, W, C) float32 in [-1, 1] and `label` (b,) when present."""
  if global_batch_size % process_count:
    raise ConfigError(f"train.batch_size={global_batch_size} is not divisible by the "
                      f"{process_count} processes.")
  dataset = (grain.MapDataset.source(source).shuffle(seed=seed).repeat()
             .batch(global_batch_size // process_count, drop_remainder=True))
  dataset = dataset[process_index::process_count].map(_scale)
  return dataset.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                   prefetch_buffer_size=prefetch))
