"""`photo_crops`: square crops of scikit-image's bundled colour photographs, a small
offline content dataset for fast style transfer (`configs/fast_style.py`).

The splits use different photographs, so test crops show scenes training never saw:

* train: astronaut, rocket, motorcycle (the left view of `stereo_motorcycle`),
  immunohistochemistry, hubble_deep_field;
* test: chelsea (the cat), retina.

`coffee` is in neither split: it is the default style image of configs/fast_style.py, and
a style image in the content data would blur what the network learnt. Example `i` of a
split crops photograph `i % len(photos)`: a square of side uniform in
[`MIN_CROP_FRACTION`, 1] times the photo's shorter side, at a uniform position, resized
to the variant's resolution (PIL's antialiased bicubic) and mirrored left-right with
probability 1/2, all drawn from `np.random.default_rng([seed, _TASK_ID, split_id, i])`:
the same data on every preparation. The photographs come with scikit-image (no download)
and TensorFlow is not needed. Variants: `default` (64 px, 2,000 train / 200 test),
`large` (256 px, 4,000 / 200; for GPUs), `tiny` (16 px, 64 / 16; for tests).
"""

import dataclasses
from typing import Any, Iterator

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from cnnjax.data import shapes
from cnnjax.data.offline_builder import OfflineBuilder
from cnnjax.data.photos import example_pixels

TRAIN_PHOTOS = ("astronaut", "rocket", "motorcycle", "immunohistochemistry",
                "hubble_deep_field")
TEST_PHOTOS = ("chelsea", "retina")
MIN_CROP_FRACTION = 0.35
_TASK_ID = 23   # Keeps these draws apart from the other builders'.


def random_crop(photo: Image.Image, rng: np.random.Generator, resolution: int
                ) -> Image.Image:
  """A seeded square crop of `photo`, resized to `resolution`, maybe mirrored."""
  width, height = photo.size
  side = int(round(rng.uniform(MIN_CROP_FRACTION, 1.0) * min(width, height)))
  left = int(rng.integers(0, width - side + 1))
  top = int(rng.integers(0, height - side + 1))
  crop = photo.crop((left, top, left + side, top + side)).resize(
      (resolution, resolution), Image.Resampling.BICUBIC, reducing_gap=2.0)
  if rng.uniform() < 0.5:
    crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  return crop


@dataclasses.dataclass(eq=False)
class PhotoCropsConfig(tfds.core.BuilderConfig):
  """Resolution, sizes and seed of a `photo_crops` variant."""
  resolution: int = 64
  num_train: int = 2_000
  num_test: int = 200
  seed: int = 0


class PhotoCrops(OfflineBuilder):
  """Seeded crops of bundled photographs (see the module docstring); `array_record`."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      PhotoCropsConfig(name="default", description="64 px, 2,000 train / 200 test."),
      PhotoCropsConfig(name="large", description="256 px, 4,000 train / 200 test.",
                       resolution=256, num_train=4_000, num_test=200),
      PhotoCropsConfig(name="tiny", description="16 px, 64 train / 16 test; for tests.",
                       resolution=16, num_train=64, num_test=16),
  ]
  DEFAULT_CONFIG_NAME = "default"

  def _info(self) -> tfds.core.DatasetInfo:
    resolution = self.builder_config.resolution
    return self.dataset_info_from_configs(
        description=(f"{resolution}x{resolution} crops of scikit-image photographs: "
                     f"train {', '.join(TRAIN_PHOTOS)}; test {', '.join(TEST_PHOTOS)}."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(resolution, resolution, 3),
                                         encoding_format="png"),
            "photo": tfds.features.Text(),
        }),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    config = self.builder_config
    return {"train": self._generate_examples("train", TRAIN_PHOTOS, config.num_train),
            "test": self._generate_examples("test", TEST_PHOTOS, config.num_test)}

  def _generate_examples(self, split: str, photo_names: tuple[str, ...],
                         num_examples: int) -> Iterator[tuple[int, dict[str, Any]]]:
    config = self.builder_config
    photos = [Image.fromarray(example_pixels(name)) for name in photo_names]
    for index in range(num_examples):
      rng = np.random.default_rng([config.seed, _TASK_ID, shapes.SPLIT_IDS[split], index])
      which = index % len(photos)
      yield index, {"image": random_crop(photos[which], rng, config.resolution),
                    "photo": photo_names[which]}
