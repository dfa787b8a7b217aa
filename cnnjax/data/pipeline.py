"""The training input pipeline: grain over a TFDS data source.

Records are shuffled with the run's seed (a new order every epoch), scaled to [-1, 1],
padded or resized to the model's resolution and grouped into global batches. Each process
reads only its own slice of every global batch; the slice is then split over the process's
devices by `cnnjax.train.parallel.put_global_batch`. The iterator's position is part of
its state (`get_state`/`set_state`), so checkpoints can store it.
"""

from typing import Any, Sequence

import grain
import numpy as np
from PIL import Image

from cnnjax.errors import ConfigError

RESIZE_MODES = ("pad", "resize")


def fit_image(image_hwc: np.ndarray, image_size: int, resize: str) -> np.ndarray:
  """Pads (centred, black) or bilinearly resizes a uint8 image to image_size^2."""
  height, width, channels = image_hwc.shape
  if (height, width) == (image_size, image_size):
    return image_hwc
  if resize == "pad":
    if height > image_size or width > image_size:
      raise ConfigError(
          f"Cannot pad {height}x{width} images to data.image_size={image_size}; "
          "set data.resize='resize' or a larger data.image_size.")
    top, left = (image_size - height) // 2, (image_size - width) // 2
    return np.pad(image_hwc, ((top, image_size - height - top),
                              (left, image_size - width - left), (0, 0)))
  pil = Image.fromarray(image_hwc[..., 0] if channels == 1 else image_hwc)
  resized = np.asarray(pil.resize((image_size, image_size), Image.BILINEAR))
  return resized.reshape(image_size, image_size, channels)


def scale_to_unit_range(images_uint8: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] -> float32 [-1, 1]."""
  return images_uint8.astype(np.float32) * (2.0 / 255.0) - 1.0


class InMemorySource(Sequence[dict[str, np.ndarray]]):
  """A data source read once and held as fitted uint8 arrays: random access without
  decoding, for datasets that fit in memory (digits, shapes).

  Args:
    source: the data source to read (every record, in order).
    image_size, resize: as in `fit_image`.
    has_label: whether to keep each record's `label`.
    max_bytes: refuse datasets whose images would exceed this many bytes.
  """

  def __init__(self, source: Sequence[dict[str, Any]], *, image_size: int, resize: str,
               has_label: bool, max_bytes: int = 4 << 30):
    first = fit_image(np.asarray(source[0]["image"]), image_size, resize)
    if len(source) * first.nbytes > max_bytes:
      raise ConfigError(
          f"The dataset needs {len(source) * first.nbytes / 2**30:.1f} GiB in memory; "
          "set data.cache_in_memory=False to read it from disk.")
    self._images = np.empty((len(source), *first.shape), np.uint8)
    self._labels = np.zeros((len(source),), np.int32) if has_label else None
    for index in range(len(source)):
      record = source[index]
      self._images[index] = fit_image(np.asarray(record["image"]), image_size, resize)
      if has_label:
        self._labels[index] = record["label"]

  def __len__(self) -> int:
    return len(self._images)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    example = {"image": self._images[index]}
    if self._labels is not None:
      example["label"] = self._labels[index]
    return example


class _ToTrainingExample(grain.transforms.Map):
  """Keeps `image` (fitted, uint8), `label` (int32, when the dataset has one) and the
  float32 features named in `keep` (e.g. shapes' factor vectors)."""

  def __init__(self, image_size: int, resize: str, has_label: bool,
               keep: Sequence[str] = ()):
    self._image_size, self._resize, self._has_label = image_size, resize, has_label
    self._keep = tuple(keep)

  def map(self, record: dict[str, Any]) -> dict[str, np.ndarray]:
    example = {"image": fit_image(np.asarray(record["image"]), self._image_size,
                                  self._resize)}
    if self._has_label:
      example["label"] = np.asarray(record["label"], np.int32)
    for name in self._keep:
      example[name] = np.asarray(record[name], np.float32)
    return example


def _scale_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  return {**batch, "image": scale_to_unit_range(batch["image"])}


def make_train_dataset(source: Sequence[dict[str, Any]], *, seed: int,
                       global_batch_size: int, image_size: int, resize: str,
                       has_label: bool, process_index: int = 0,
                       process_count: int = 1, num_threads: int = 4,
                       prefetch: int = 8, cache_in_memory: bool = False,
                       keep: Sequence[str] = ()) -> grain.IterDataset:
  """An endless dataset of this process's slices of global batches.

  Args:
    source: a random-access data source of records with `image` (H, W, C) uint8.
    seed: shuffle seed (the run's seed).
    global_batch_size: examples per step over all processes.
    image_size: the model's resolution.
    resize: "pad" or "resize" (see `fit_image`).
    has_label: whether to keep each record's `label`.
    process_index, process_count: this process and the number of processes.
    num_threads, prefetch: grain read threads and batches read ahead.
    cache_in_memory: read and fit every record once into an `InMemorySource`.
    keep: more record features to keep, as float32 arrays (not with cache_in_memory).

  Yields:
    dicts with `image` (global_batch_size / process_count, image_size, image_size, C)
    float32 in [-1, 1] and, with `has_label`, `label` (same leading size,) int32.
  """
  if global_batch_size % process_count:
    raise ConfigError(f"train.batch_size={global_batch_size} is not divisible by the "
                      f"{process_count} processes.")
  local_batch_size = global_batch_size // process_count
  if cache_in_memory:
    source = InMemorySource(source, image_size=image_size, resize=resize,
                            has_label=has_label)
  dataset = (grain.MapDataset.source(source)
             .shuffle(seed=seed)
             .repeat()
             .map(_ToTrainingExample(image_size, resize, has_label, keep))
             .batch(local_batch_size, drop_remainder=True))
  # Consecutive local batches of one global batch go to consecutive processes.
  dataset = dataset[process_index::process_count].map(_scale_batch)
  return dataset.to_iter_dataset(grain.ReadOptions(
      num_threads=num_threads, prefetch_buffer_size=prefetch))
