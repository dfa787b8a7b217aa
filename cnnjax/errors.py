"""Errors that reach the user as one line: what was wrong and how to fix it.

`run.py` catches `CnnjaxError`, prints its message on one line to stderr and exits
with status 2. Anything else is a bug and keeps its traceback.
"""


class CnnjaxError(Exception):
  """Base class of errors caused by bad input (config, data, workdir, flags)."""


class ConfigError(CnnjaxError, ValueError):
  """A config value is invalid or inconsistent with the others."""


class DatasetError(CnnjaxError):
  """A dataset is missing, unprepared or unusable."""


class WorkdirError(CnnjaxError):
  """The work directory cannot be used (unwritable, incompatible run, ...)."""


class CheckpointError(CnnjaxError):
  """No usable checkpoint, or a checkpoint that does not match the config."""


class NonFiniteError(CnnjaxError):
  """Training produced a NaN or infinite loss or parameter."""


class ImageError(CnnjaxError):
  """A user's image file is missing, unreadable or of the wrong size."""
