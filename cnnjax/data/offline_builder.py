"""`OfflineBuilder`: the base of the project's TFDS builders, which prepare their data
from installed packages (no download) and write `array_record` files."""

import sys
from typing import Any

from etils import epath
import tensorflow_datasets as tfds

DEFAULT_FILE_FORMAT = "array_record"


class OfflineBuilder(tfds.core.GeneratorBasedBuilder):
  """A generator-based builder written as `array_record` unless `file_format` is given.

  Abstract (no `_info`), so TFDS does not register it as a dataset of its own.
  """

  def __init__(self, *, file_format: str | None = None, **kwargs: Any):
    """Initializes the builder, defaulting to the `array_record` format.

    Args:
      file_format: Record file format; `array_record` (random access, needed
        by `tfds.data_source`) when None.
      **kwargs: Passed to `tfds.core.GeneratorBasedBuilder`.
    """
    super().__init__(file_format=file_format or DEFAULT_FILE_FORMAT, **kwargs)

  # TFDS 4.9.10 resolves `code_path` through `importlib_resources`, which it
  # only installs for Python < 3.9, so preparing fails on 3.11 without it.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(sys.modules[cls.__module__].__file__)
