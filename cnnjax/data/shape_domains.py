"""`shape_domains`: an unpaired image-to-image task, two domains drawn from the `shapes`
geometry that do not correspond image by image.

Each config is one domain, with features `image` and `label` (the shape class; example
`i` has class `i % 6`):

* `outline` (domain A): a shape's white outline on black (`shape_pairs.render_outline`);
* `filled` (domain B): a shape filled with its class's colour on black (hue = class / 6
  plus a uniform offset in [-0.04, 0.04]; `shapes.render_shape`), the distribution of
  `shape_pairs`' `image`.

So translating A -> B means "fill the outline with the colour its shape calls for", but
no example of one domain is the other domain's drawing of the same shape: position,
scale, rotation and hue offset of example `i` of domain `d` in split `s` are drawn from
`np.random.default_rng([seed, 23, domain_id(d), split_id(s), i])`, independently for the
two domains. A classifier trained on `filled` checks that a translation shows its
source's shape (the task score). Nothing is downloaded and TensorFlow is not needed.

Configs: `outline`, `filled` (32 px, 4,000 train / 600 test), `outline_tiny`,
`filled_tiny` (16 px, 48 train / 24 test; for tests).
"""

import dataclasses
from typing import Any, Iterator

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from cnnjax.data.offline_builder import OfflineBuilder
from cnnjax.data import shape_pairs, shapes

DOMAIN_IDS = {"outline": 0, "filled": 1}
_TASK_ID = 23   # Keeps these draws apart from `shapes`' and `shape_pairs`' own.


def render_domain(domain: str, shape_name: str, factors: dict[str, float],
                  resolution: int) -> Image.Image:
  """One example of `domain` (`outline` or `filled`), RGB."""
  if domain == "outline":
    return shape_pairs.render_outline(shape_name, factors, resolution)
  return shapes.render_shape(shape_name, factors, resolution)


@dataclasses.dataclass(eq=False)
class ShapeDomainsConfig(tfds.core.BuilderConfig):
  """The domain, resolution, sizes and seed of a `shape_domains` config."""
  domain: str = "outline"
  resolution: int = 32
  num_train: int = 4_000
  num_test: int = 600
  seed: int = 0


def _configs() -> list[ShapeDomainsConfig]:
  configs = []
  for domain, what in (("outline", "white outlines on black (domain A)"),
                       ("filled", "shapes filled with their class's hue (domain B)")):
    configs.append(ShapeDomainsConfig(
        name=domain, domain=domain, description=f"32 px {what}; 4,000 train / 600 test."))
    configs.append(ShapeDomainsConfig(
        name=f"{domain}_tiny", domain=domain, resolution=16, num_train=48, num_test=24,
        description=f"16 px {what}; 48 train / 24 test, for tests."))
  return configs


class ShapeDomains(OfflineBuilder):
  """One domain of the unpaired outline / filled task (module docstring); `array_record`."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = _configs()
  DEFAULT_CONFIG_NAME = "outline"

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    return self.dataset_info_from_configs(
        description=(f"Domain {config.domain!r} of the unpaired shape task, "
                     f"{config.resolution}x{config.resolution}; class = index % "
                     f"{len(shapes.SHAPE_NAMES)}."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(config.resolution, config.resolution, 3),
                                         encoding_format="png"),
            "label": tfds.features.ClassLabel(names=list(shapes.SHAPE_NAMES)),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    config = self.builder_config
    return {"train": self._generate_examples("train", config.num_train),
            "test": self._generate_examples("test", config.num_test)}

  def _generate_examples(self, split: str, num_examples: int
                         ) -> Iterator[tuple[int, dict[str, Any]]]:
    config = self.builder_config
    for index in range(num_examples):
      rng = np.random.default_rng([config.seed, _TASK_ID, DOMAIN_IDS[config.domain],
                                   shapes.SPLIT_IDS[split], index])
      label = index % len(shapes.SHAPE_NAMES)
      name = shapes.SHAPE_NAMES[label]
      factors = shape_pairs.class_factors(rng, label)
      yield index, {"image": render_domain(config.domain, name, factors, config.resolution),
                    "label": name}
