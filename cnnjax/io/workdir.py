"""The work directory: created and checked before training, files written atomically."""

import json
import os
import tempfile
from typing import Any

import ml_collections

from cnnjax.errors import WorkdirError
from cnnjax.io.atomic import atomic_write

CONFIG_FILE = "config.json"
DATA_INFO_FILE = "data_info.json"   # Dataset name, image shape, classes of a run.
EVAL_FILE = "eval.json"   # `run.py evaluate` (a classifier: its test accuracy).


def prepare_workdir(workdir: str) -> str:
  """Creates `workdir` if needed and checks it is writable; returns its absolute path.

  Raises:
    WorkdirError: if the directory cannot be created or written.
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.TemporaryFile(dir=workdir):
      pass
  except OSError as error:
    raise WorkdirError(f"Cannot write to workdir {workdir} ({error.strerror}); "
                       "choose a writable --workdir.") from None
  return workdir


def write_json_atomic(path: str, payload: Any) -> None:
  """Writes `payload` as indented JSON; readers see the old or the new file, never half."""
  with atomic_write(path) as file:
    json.dump(payload, file, indent=2, sort_keys=True)
    file.write("\n")


def read_json(path: str) -> Any:
  """A run's JSON file; a damaged one is a `WorkdirError` (not a traceback)."""
  with open(path) as file:
    try:
      return json.load(file)
    except ValueError as error:
      raise WorkdirError(f"{path} is not valid JSON ({error.msg}, line {error.lineno}); "
                         "restore it or start the run in a new --workdir.") from None


def load_run_config(workdir: str) -> tuple[ml_collections.ConfigDict, dict]:
  """The resolved (locked) config and the data description a training run recorded."""
  config_path = os.path.join(workdir, CONFIG_FILE)
  info_path = os.path.join(workdir, DATA_INFO_FILE)
  if not (os.path.isfile(config_path) and os.path.isfile(info_path)):
    raise WorkdirError(f"{workdir} holds no training run (no {CONFIG_FILE} and "
                       f"{DATA_INFO_FILE}); pass the --workdir of a run.")
  config = ml_collections.ConfigDict(read_json(config_path))
  config.lock()
  return config, read_json(info_path)
