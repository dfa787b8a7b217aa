"""`shape_pairs`: a paired image-to-image task drawn from the `shapes` geometry.

Each example is one shape (circle, square, triangle, star, heart, cross; example `i` has
class `i % 6`) drawn twice at the same position, scale and rotation:

* `outline`: its white outline (about one pixel wide) on black: the translation's input;
* `image`: the shape filled with its class's colour (hue = class / 6, plus a uniform
  offset in [-0.04, 0.04]) on black: the target, rendered by `shapes.render_shape`;
* `label`: the class.

So the task is "fill the outline with the colour its shape calls for", and a classifier
trained on `image` can check that a translation shows the source's shape (the FCN-score
of pix2pix). Position, scale and rotation use the ranges of `shapes`. Example `i` of split
`s` is drawn from `np.random.default_rng([seed, 17, split_id(s), i])`, so the data is
identical on every preparation; nothing is downloaded and TensorFlow is not needed.
Variants: `default` (32 px, 4,000 train / 600 test), `tiny` (16 px, 96 / 48; for tests).
"""

import dataclasses
from typing import Any, Iterator

import numpy as np
from PIL import Image, ImageDraw
import tensorflow_datasets as tfds

from cnnjax.data.offline_builder import OfflineBuilder
from cnnjax.data import shapes

HUE_JITTER = 0.04
OUTLINE_WIDTH = 1.0   # In output pixels.
_TASK_ID = 17         # Keeps these draws apart from `shapes`' own.


def class_factors(rng: np.random.Generator, label: int) -> dict[str, float]:
  """Position, scale, rotation from `shapes`' ranges; the hue from the class."""
  factors = shapes.sample_factors(rng)
  offset = rng.uniform(-HUE_JITTER, HUE_JITTER)
  factors["hue"] = float((label / len(shapes.SHAPE_NAMES) + offset) % 1.0)
  return factors


def render_outline(shape_name: str, factors: dict[str, float], resolution: int
                   ) -> Image.Image:
  """The white outline of the shape `shapes.render_shape` fills, anti-aliased, RGB."""
  size = resolution * shapes.SUPERSAMPLING
  canvas = Image.new("RGB", (size, size), (0, 0, 0))
  draw = ImageDraw.Draw(canvas)
  width = max(1, round(OUTLINE_WIDTH * shapes.SUPERSAMPLING))
  centre_x, centre_y = factors["x"] * size, factors["y"] * size
  radius = factors["scale"] * size
  if shape_name == "circle":
    draw.ellipse([centre_x - radius, centre_y - radius, centre_x + radius,
                  centre_y + radius], outline=(255, 255, 255), width=width)
  else:
    cos, sin = np.cos(factors["rotation"]), np.sin(factors["rotation"])
    outline = shapes._OUTLINES[shape_name] @ np.array([[cos, sin], [-sin, cos]])  # pylint: disable=protected-access
    points = np.stack([centre_x + radius * outline[:, 0],
                       centre_y - radius * outline[:, 1]], axis=-1)
    points = [tuple(point) for point in points.tolist()]
    draw.line(points + points[:1], fill=(255, 255, 255), width=width, joint="curve")
  return canvas.resize((resolution, resolution), Image.Resampling.BOX)


@dataclasses.dataclass(eq=False)
class ShapePairsConfig(tfds.core.BuilderConfig):
  """Resolution, sizes and seed of a `shape_pairs` variant."""
  resolution: int = 32
  num_train: int = 4_000
  num_test: int = 600
  seed: int = 0


class ShapePairs(OfflineBuilder):
  """Outline -> filled shape pairs (see the module docstring); `array_record` files."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      ShapePairsConfig(name="default", description="32 px, 4,000 train / 600 test."),
      ShapePairsConfig(name="tiny", description="16 px, 96 train / 48 test; for tests.",
                       resolution=16, num_train=96, num_test=48),
  ]
  DEFAULT_CONFIG_NAME = "default"

  def _info(self) -> tfds.core.DatasetInfo:
    resolution = self.builder_config.resolution
    image = lambda: tfds.features.Image(shape=(resolution, resolution, 3),
                                        encoding_format="png")
    return self.dataset_info_from_configs(
        description=(f"Paired {resolution}x{resolution} shapes: `outline` (white on "
                     "black) -> `image` (filled with the class's hue); class = index % "
                     f"{len(shapes.SHAPE_NAMES)}."),
        features=tfds.features.FeaturesDict({
            "outline": image(), "image": image(),
            "label": tfds.features.ClassLabel(names=list(shapes.SHAPE_NAMES)),
        }),
        supervised_keys=("outline", "image"),
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
      rng = np.random.default_rng([config.seed, _TASK_ID, shapes.SPLIT_IDS[split], index])
      label = index % len(shapes.SHAPE_NAMES)
      name = shapes.SHAPE_NAMES[label]
      factors = class_factors(rng, label)
      yield index, {"outline": render_outline(name, factors, config.resolution),
                    "image": shapes.render_shape(name, factors, config.resolution),
                    "label": name}
