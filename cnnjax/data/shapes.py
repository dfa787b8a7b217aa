"""`shapes`: procedurally drawn coloured shapes with known generative factors.

Each example is one filled shape on a plain background, drawn at 4x the
output resolution and box-downsampled with PIL (anti-aliased). Classes:
circle, square, triangle, star, heart, cross; example `i` of a split has
class `i % 6`, so classes are balanced.

Ground-truth factors (float32, stored under `factors`), each drawn
independently and uniformly:

* `x`, `y`: shape centre as a fraction of the image width / height, measured
  from the left / top edge, in [0.3, 0.7].
* `scale`: circumradius of the shape as a fraction of the image side, in
  [0.15, 0.30]. Centre and scale ranges keep every shape inside the image.
* `rotation`: counter-clockwise rotation as displayed, radians in [0, 2*pi].
  Shapes with rotational symmetry look the same modulo their symmetry angle
  (circle: any angle; square, cross: pi/2; triangle: 2*pi/3; star: 2*pi/5).
* `hue`: HSV hue of the fill colour in [0, 1]; saturation 0.85, value 1.

Sizes, resolution, seed and background come from `ShapesConfig`
(`shapes/default`: 32 px, 20,000 train / 2,000 test; `shapes/tiny`: 32 px,
256 / 64). Example `i` of split `s` is drawn from
`np.random.default_rng([seed, split_id(s), i])` (train 0, test 1), so the data
is identical on every preparation. Files are `array_record` by default so the
dataset can be read with `tfds.data_source` without TensorFlow.
"""

import colorsys
import dataclasses
from typing import Any, Iterator

import numpy as np
from PIL import Image
from PIL import ImageDraw
import tensorflow_datasets as tfds

from cnnjax.data.offline_builder import OfflineBuilder

SHAPE_NAMES = ("circle", "square", "triangle", "star", "heart", "cross")
CENTRE_RANGE = (0.3, 0.7)
SCALE_RANGE = (0.15, 0.30)
ROTATION_RANGE = (0.0, 2 * np.pi)
HUE_RANGE = (0.0, 1.0)
FACTOR_RANGES = {
    "x": CENTRE_RANGE,
    "y": CENTRE_RANGE,
    "scale": SCALE_RANGE,
    "rotation": ROTATION_RANGE,
    "hue": HUE_RANGE,
}
SATURATION = 0.85
VALUE = 1.0
SUPERSAMPLING = 4
SPLIT_IDS = {"train": 0, "test": 1}


def _regular_polygon(radii: list[float], start_angle: float) -> np.ndarray:
  """Vertices at equal angular steps with the given radii, (N, 2), y up."""
  angles = start_angle + np.arange(len(radii)) * 2 * np.pi / len(radii)
  return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=-1)


def _heart() -> np.ndarray:
  t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
  x = 16 * np.sin(t) ** 3
  y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
  points = np.stack([x, y], axis=-1)
  points -= (points.max(axis=0) + points.min(axis=0)) / 2
  return points / np.linalg.norm(points, axis=-1).max()


def _cross(half_width: float = 0.35) -> np.ndarray:
  arm = np.sqrt(1 - half_width**2)  # Arm corners lie on the unit circle.
  w, a = half_width, arm
  return np.array([
      (w, a), (w, w), (a, w), (a, -w), (w, -w), (w, -a),
      (-w, -a), (-w, -w), (-a, -w), (-a, w), (-w, w), (-w, a),
  ])


# Outlines with unit circumradius centred on the origin, y pointing up.
_OUTLINES = {
    "square": _regular_polygon([1.0] * 4, np.pi / 4),
    "triangle": _regular_polygon([1.0] * 3, np.pi / 2),
    "star": _regular_polygon([1.0, 0.45] * 5, np.pi / 2),
    "heart": _heart(),
    "cross": _cross(),
}


def sample_factors(rng: np.random.Generator) -> dict[str, float]:
  """Draws one set of factors uniformly from `FACTOR_RANGES`."""
  return {
      name: float(rng.uniform(low, high))
      for name, (low, high) in FACTOR_RANGES.items()
  }


def render_shape(
    shape_name: str,
    factors: dict[str, float],
    resolution: int,
    background: tuple[int, int, int] = (0, 0, 0),
) -> Image.Image:
  """Draws one anti-aliased shape.

  Args:
    shape_name: One of `SHAPE_NAMES`.
    factors: `x`, `y`, `scale`, `rotation`, `hue` as documented in the module.
    resolution: Side of the square output image in pixels.
    background: RGB background colour.

  Returns:
    An RGB PIL image of size (resolution, resolution).
  """
  canvas_size = resolution * SUPERSAMPLING
  canvas = Image.new("RGB", (canvas_size, canvas_size), tuple(background))
  draw = ImageDraw.Draw(canvas)
  red, green, blue = colorsys.hsv_to_rgb(factors["hue"], SATURATION, VALUE)
  colour = (round(red * 255), round(green * 255), round(blue * 255))
  centre_x = factors["x"] * canvas_size
  centre_y = factors["y"] * canvas_size
  radius = factors["scale"] * canvas_size
  if shape_name == "circle":
    draw.ellipse(
        [centre_x - radius, centre_y - radius,
         centre_x + radius, centre_y + radius],
        fill=colour,
    )
  else:
    cos, sin = np.cos(factors["rotation"]), np.sin(factors["rotation"])
    outline = _OUTLINES[shape_name] @ np.array([[cos, sin], [-sin, cos]])
    # Image rows grow downwards, so the outline's y axis is flipped.
    points = np.stack(
        [centre_x + radius * outline[:, 0], centre_y - radius * outline[:, 1]],
        axis=-1,
    )
    draw.polygon([tuple(point) for point in points.tolist()], fill=colour)
  return canvas.resize((resolution, resolution), Image.Resampling.BOX)


@dataclasses.dataclass(eq=False)
class ShapesConfig(tfds.core.BuilderConfig):
  """Size, resolution and seed of a `shapes` variant.

  Attributes:
    resolution: Image side in pixels.
    num_train: Number of training examples.
    num_test: Number of test examples.
    seed: Seed of every example's random generator.
    background: RGB background colour.
  """

  resolution: int = 32
  num_train: int = 20_000
  num_test: int = 2_000
  seed: int = 0
  background: tuple[int, int, int] = (0, 0, 0)


class Shapes(OfflineBuilder):
  """Coloured shapes with ground-truth factors (see the module docstring).

  Features: `image` (res, res, 3) uint8, `label` (ClassLabel over
  `SHAPE_NAMES`) and `factors` (float32 `x`, `y`, `scale`, `rotation`, `hue`).
  Written as `array_record` unless `file_format` is given.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      ShapesConfig(
          name="default",
          description="32 px, 20,000 train / 2,000 test.",
      ),
      ShapesConfig(
          name="tiny",
          description="32 px, 256 train / 64 test; for tests.",
          num_train=256,
          num_test=64,
      ),
  ]
  DEFAULT_CONFIG_NAME = "default"

  def _info(self) -> tfds.core.DatasetInfo:
    resolution = self.builder_config.resolution
    factor_ranges = ", ".join(
        f"{name} in [{low:.4g}, {high:.4g}]"
        for name, (low, high) in FACTOR_RANGES.items()
    )
    return self.dataset_info_from_configs(
        description=(
            f"Procedural shapes ({', '.join(SHAPE_NAMES)}; class = index % "
            f"{len(SHAPE_NAMES)}), anti-aliased, {resolution}x{resolution} "
            f"RGB on background {tuple(self.builder_config.background)}. "
            f"Uniform factors: {factor_ranges}. x, y: centre as a fraction of "
            "width/height from the left/top; scale: circumradius / image side; "
            "rotation: radians, counter-clockwise; hue: HSV hue (s=0.85, v=1). "
            "Example i is drawn from np.random.default_rng([seed, split_id, "
            f"i]) with seed={self.builder_config.seed}, split_id train=0, "
            "test=1."
        ),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(
                shape=(resolution, resolution, 3), encoding_format="png"
            ),
            "label": tfds.features.ClassLabel(names=list(SHAPE_NAMES)),
            "factors": tfds.features.FeaturesDict({
                name: tfds.features.Scalar(dtype=np.float32)
                for name in FACTOR_RANGES
            }),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    config = self.builder_config
    return {
        "train": self._generate_examples("train", config.num_train),
        "test": self._generate_examples("test", config.num_test),
    }

  def _generate_examples(
      self, split: str, num_examples: int
  ) -> Iterator[tuple[int, dict[str, Any]]]:
    config = self.builder_config
    for index in range(num_examples):
      rng = np.random.default_rng([config.seed, SPLIT_IDS[split], index])
      shape_name = SHAPE_NAMES[index % len(SHAPE_NAMES)]
      factors = sample_factors(rng)
      image = render_shape(
          shape_name, factors, config.resolution, config.background
      )
      yield index, {
          "image": image,
          "label": shape_name,
          "factors": {
              name: np.float32(value) for name, value in factors.items()
          },
      }
