"""Random-access data sources for every pipeline: `get_data_source`.

Project datasets (`digits`, `shapes[/config]`) are prepared offline on first use
into `data_dir`; any other TFDS dataset must already be prepared there in a
random-access format (`array_record`), because nothing is ever downloaded and
TensorFlow is not installed. Reading goes through `tfds` data sources, which
need no TensorFlow.

Importing this module registers the project builders with TFDS.
"""

import contextlib
import fcntl
import os
import re
from typing import Any, Iterator, Sequence

from absl import logging
from etils import epath
import tensorflow_datasets as tfds

from cnnjax.data import digits
from cnnjax.data import photo_crops
from cnnjax.data import shape_domains
from cnnjax.data import shape_pairs
from cnnjax.data import shapes
from cnnjax.errors import DatasetError

PROJECT_BUILDERS = (digits.Digits, shapes.Shapes, shape_pairs.ShapePairs,
                    shape_domains.ShapeDomains, photo_crops.PhotoCrops)
_PROJECT_NAMES = ", ".join(
    f"{cls.name}[/{'|'.join(c.name for c in cls.BUILDER_CONFIGS)}]"
    if cls.BUILDER_CONFIGS else cls.name
    for cls in PROJECT_BUILDERS
)


def resolve_data_dir(data_dir: str | None) -> str:
  """Returns the directory that holds (or will hold) prepared datasets.

  Args:
    data_dir: An explicit directory; None or "" means `$TFDS_DATA_DIR` if set,
      else TFDS's default (`~/tensorflow_datasets`).
  """
  resolved = (
      data_dir
      or os.environ.get("TFDS_DATA_DIR")
      or tfds.core.constants.DATA_DIR
  )
  return os.path.expanduser(os.fspath(resolved))


def get_data_source(
    name: str, split: str, data_dir: str | None = None
) -> tuple[Sequence[dict[str, Any]], tfds.core.DatasetInfo]:
  """Returns a random-access source of decoded examples and the dataset info.

  Args:
    name: TFDS name, `dataset[/config][:version]`, e.g. `digits`,
      `shapes/tiny`, `mnist:3.0.1`.
    split: TFDS split spec, e.g. `train`, `test[:10%]`, `train+test`.
    data_dir: Directory holding prepared datasets. None means
      `$TFDS_DATA_DIR`, else TFDS's default (`~/tensorflow_datasets`).

  Returns:
    `(source, info)`: `source[i]` is a dict of numpy features (e.g. `image`,
    `label`); `info` is the dataset's `tfds.core.DatasetInfo`.

  Raises:
    DatasetError: The name is unknown, the dataset is not prepared (and is not
      a project dataset), cannot be read with random access, or the split
      does not exist.
  """
  data_dir = resolve_data_dir(data_dir)
  builder = _load_builder(name, data_dir)
  if not _is_prepared(builder):
    if not isinstance(builder, PROJECT_BUILDERS):
      raise DatasetError(_not_prepared_message(name, data_dir))
    _prepare_project_dataset(builder, name, data_dir)
    # Re-read the info written by whichever process prepared the dataset.
    builder = _load_builder(name, data_dir)
  _check_random_access(builder, name, data_dir)
  _check_split(builder, name, split)
  return builder.as_data_source(split=split), builder.info


def dataset_num_classes(info: tfds.core.DatasetInfo) -> int | None:
  """Returns the number of classes of the `label` ClassLabel, None if absent.

  Args:
    info: The dataset's info.
  """
  label = _top_level_features(info).get("label")
  if isinstance(label, tfds.features.ClassLabel):
    return label.num_classes
  return None


def dataset_image_shape(info: tfds.core.DatasetInfo) -> tuple[int, int, int]:
  """Returns the (height, width, channels) of the `image` feature.

  Args:
    info: The dataset's info.

  Raises:
    DatasetError: There is no `image` feature or its size is not fixed.
  """
  features = _top_level_features(info)
  image = features.get("image")
  if image is None:
    raise DatasetError(
        f"Dataset {info.full_name} has no 'image' feature (features: "
        f"{sorted(features)}); use a dataset with an 'image' feature."
    )
  shape = tuple(image.shape)
  if len(shape) != 3 or any(dim is None or dim < 1 for dim in shape):
    raise DatasetError(
        f"Dataset {info.full_name} has images of shape {shape}, not a fixed "
        "(height, width, channels); use a dataset with fixed-size images."
    )
  return shape


def _is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
  # `is_prepared` alone logs a warning for every missing variant folder.
  return epath.Path(builder.data_path).exists() and builder.is_prepared()


def _top_level_features(info: tfds.core.DatasetInfo) -> dict[str, Any]:
  return dict(info.features.items()) if info.features is not None else {}


def _load_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """Builds the TFDS builder for `name`, mapping failures to one-line errors."""
  try:
    dataset_name, _ = tfds.core.naming.parse_builder_name_kwargs(name)
  except ValueError:
    raise DatasetError(
        f"Invalid dataset name {name!r}: expected dataset[/config][:version], "
        "e.g. 'shapes/tiny' or 'mnist:3.0.1'."
    ) from None
  if dataset_name.namespace:
    raise DatasetError(
        f"Namespaced dataset {name!r} is not supported: prepare it with `tfds "
        "build` and use its plain name with --config.data.data_dir."
    )
  try:
    return tfds.builder(name, data_dir=data_dir)
  except ImportError as error:
    raise DatasetError(
        f"Cannot load dataset {name!r}: {_first_line(error)}; install the "
        "missing package or prepare the dataset elsewhere."
    ) from None
  except tfds.core.registered.DatasetNotFoundError:
    raise DatasetError(
        f"Unknown dataset {name!r}: it is neither a project dataset "
        f"({_PROJECT_NAMES}), nor in the TFDS catalogue, nor prepared in "
        f"{data_dir}; check the name and --config.data.data_dir."
    ) from None
  # Bad config/version (ValueError, AssertionError), or keyword arguments in
  # the name that the builder does not take (TypeError).
  except (ValueError, AssertionError, TypeError) as error:
    reason = _first_line(error).split(". ")[0].rstrip(".")
    raise DatasetError(
        f"Cannot load dataset {name!r}: {reason}"
        f"{_available_variants(dataset_name.name)}"
    ) from None


def _first_line(error: Exception) -> str:
  """The first line of `error`, without TFDS's 'Failed to construct' prefix."""
  message = str(error).strip().splitlines()[0] if str(error).strip() else ""
  message = re.sub(r"^Failed to construct dataset .*?\}\"?: ", "", message)
  return message.rstrip(": ")


def _available_variants(dataset_name: str) -> str:
  """'; available versions: ..., configs: ...' for a registered dataset."""
  try:
    builder_cls = tfds.builder_cls(dataset_name)
  except tfds.core.registered.DatasetNotFoundError:
    return ""
  versions = [builder_cls.VERSION, *builder_cls.SUPPORTED_VERSIONS]
  configs = [config.name for config in builder_cls.BUILDER_CONFIGS]
  text = f"; available versions: {', '.join(str(v) for v in versions)}"
  if configs:
    text += f", configs: {', '.join(configs)}"
  return text + "."


def _not_prepared_message(name: str, data_dir: str) -> str:
  return (
      f"Dataset {name!r} is not prepared in {data_dir} and cannot be "
      "downloaded here: on a machine with network access, install tensorflow "
      f"and run `tfds build {name} --file_format=array_record "
      f"--data_dir=<dir>`, copy <dir> here and pass "
      "--config.data.data_dir=<dir>."
  )


def _prepare_project_dataset(
    builder: tfds.core.DatasetBuilder, name: str, data_dir: str
) -> None:
  """Prepares a project dataset once, even with concurrent callers.

  TFDS writes into `incomplete.<random>_<version>/` and renames it to the
  version directory at the end, so a half-written dataset never looks
  prepared. A lock file next to it stops two local processes from preparing
  the same variant twice (and the loser's rename from failing).
  """
  data_path = epath.Path(builder.data_path)
  try:
    with _exclusive_lock(data_path.parent / f".{data_path.name}.prepare.lock"):
      if _is_prepared(builder):  # Another process finished first.
        return
      if data_path.exists():
        raise DatasetError(
            f"{data_path} exists but is not a complete TFDS dataset; delete it "
            f"and rerun to prepare {name!r} again."
        )
      logging.info("Preparing dataset %s in %s (first use).", name, data_dir)
      builder.download_and_prepare(
          # The default would ask GCS for a hosted copy (network, TensorFlow).
          download_config=tfds.download.DownloadConfig(try_download_gcs=False)
      )
  except OSError as error:
    if _is_prepared(builder):  # Lost a rename race against another process.
      return
    raise DatasetError(
        f"Cannot prepare dataset {name!r} in {data_dir}: {error}; pass a "
        "writable --config.data.data_dir."
    ) from None


@contextlib.contextmanager
def _exclusive_lock(lock_path: epath.Path) -> Iterator[None]:
  """Holds an exclusive `flock` on `lock_path`; no-op for remote paths."""
  if "://" in os.fspath(lock_path):
    yield
    return
  lock_path.parent.mkdir(parents=True, exist_ok=True)
  with open(lock_path, "a") as lock_file:
    fcntl.flock(lock_file, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock_file, fcntl.LOCK_UN)


def _check_random_access(
    builder: tfds.core.DatasetBuilder, name: str, data_dir: str
) -> None:
  formats = builder.info.available_file_formats()
  if not formats & tfds.core.FileFormat.with_random_access():
    stored = ", ".join(sorted(f.value for f in formats)) or "unknown"
    raise DatasetError(
        f"Dataset {name!r} in {data_dir} is stored as {stored}, which has no "
        f"random access: rebuild it with `tfds build {name} "
        "--file_format=array_record --data_dir=<dir>` (needs tensorflow)."
    )


def _check_split(
    builder: tfds.core.DatasetBuilder, name: str, split: str
) -> None:
  try:
    builder.info.splits[split]
  except (ValueError, KeyError) as error:
    available = ", ".join(builder.info.splits.keys())
    reason = _first_line(error)
    if reason.startswith("Unknown split"):
      problem = f"Split {split!r} does not exist in dataset {name!r}"
    else:
      problem = f"Invalid split {split!r} for dataset {name!r} ({reason})"
    raise DatasetError(f"{problem}; available splits: {available}.") from None
