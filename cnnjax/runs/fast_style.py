"""The `fast_style` kind: Johnson et al.'s feed-forward style transfer
(`configs/fast_style.py`), one transformer network trained per style image on a content
dataset (`photo_crops` by default) with the perceptual loss of `cnnjax.losses.style`.

The feature network (random-weight or VGG19, `cnnjax.models.style_features`) and the
style image (`config.style_image`, a file or `skimage:NAME`, at `config.style_size`) are
rebuilt from the config whenever the run is opened, so a checkpoint holds only the
transformer. Training grids show content | stylised on the first `eval.num_grid` test
images; `run.py stylize --workdir=DIR` applies a finished run to any image
(`cnnjax.style.fast_stylize`).
"""

import ml_collections
import numpy as np

from cnnjax.data.photos import load_image
from cnnjax.data.pipeline import scale_to_unit_range
from cnnjax.data.splits import load_split
from cnnjax.errors import DatasetError
from cnnjax.models.style_features import build_feature_network, check_config
from cnnjax.runs.kind import ExperimentKind
from cnnjax.train.loop import TrainData, open_image_data
from cnnjax.train.fast_style_program import (FAST_STYLE_HINT, FastStyleProgram,
                                             build_fast_style_program,
                                             validate_fast_style_config)


def smallest_side(config: ml_collections.ConfigDict) -> int:
  """The smallest image the feature network sees in training: a crop or the style."""
  return min(config.data.image_size, config.style_size)


def style_image(config: ml_collections.ConfigDict) -> np.ndarray:
  """The run's style image, (style_size, style_size, 3) in [-1, 1].

  Raises:
    ImageError: a missing or unreadable file, or an unknown example (one line).
  """
  return load_image(config.style_image, config.style_size)


def _validate(config: ml_collections.ConfigDict, num_devices: int) -> None:
  validate_fast_style_config(config, num_devices)
  check_config(config, smallest_side(config))
  style_image(config)


def _open_data(config: ml_collections.ConfigDict) -> TrainData:
  """The default image data, which must be RGB (the transformer maps RGB to RGB)."""
  data = open_image_data(config)
  channels = data.info["image_shape"][-1]
  if channels != 3:
    raise DatasetError(f"fast_style trains on RGB content images, but {config.data.name} "
                       f"has {channels} channel(s): set data.name to an RGB dataset such "
                       "as photo_crops.")
  return data


def _build_program(config: ml_collections.ConfigDict, *, mesh, data_info: dict,
                   grid_contents: np.ndarray | None = None) -> FastStyleProgram:
  del data_info   # Content images are RGB at data.image_size (checked by the loop).
  network = build_feature_network(config, smallest_side(config))
  return build_fast_style_program(
      config, mesh=mesh, feature_module=network.module,
      feature_variables=network.variables, style_image=style_image(config),
      grid_contents=grid_contents)


def test_contents(config: ml_collections.ConfigDict, limit: int = 0) -> np.ndarray:
  """The first `limit` (0: all) test-split images, (N, S, S, 3) in [-1, 1]."""
  images, _ = load_split(config.data.name, config.data.test_split,
                         config.data.data_dir or None, config.data.image_size,
                         config.data.resize)
  return scale_to_unit_range(images[:limit] if limit else images)


def _build_training_program(config: ml_collections.ConfigDict, *, mesh, data_info: dict
                            ) -> FastStyleProgram:
  return _build_program(config, mesh=mesh, data_info=data_info,
                        grid_contents=test_contents(config, config.eval.num_grid))


KIND = ExperimentKind(
    name="fast_style",
    summary="feed-forward style transfer (Johnson et al.; configs/fast_style.py)",
    config_hint=FAST_STYLE_HINT,
    validate=_validate,
    build_program=_build_program,
    build_training_program=_build_training_program,
    open_data=_open_data,
)
