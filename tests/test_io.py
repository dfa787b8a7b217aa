"""Run outputs are replaced atomically, readable like ordinary files, never half-written."""

import json
import os

import numpy as np
import pytest

from cnnjax.io.atomic import atomic_write
from cnnjax.io.images import save_png
from cnnjax.io.workdir import read_json, write_json_atomic


def _mode(path) -> int:
  return os.stat(path).st_mode & 0o777


def test_atomic_writes_get_the_permissions_of_ordinary_files(tmp_path):
  with open(tmp_path / "ordinary.txt", "w") as file:  # What open() gives under the umask.
    file.write("x")
  write_json_atomic(str(tmp_path / "run.json"), {"step": 1})
  save_png(str(tmp_path / "grid.png"), np.zeros((4, 4, 1), np.uint8))
  expected = _mode(tmp_path / "ordinary.txt")
  assert _mode(tmp_path / "run.json") == _mode(tmp_path / "grid.png") == expected
  assert sorted(os.listdir(tmp_path)) == ["grid.png", "ordinary.txt", "run.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
  path = str(tmp_path / "eval.json")
  write_json_atomic(path, {"fid": 1.5})
  with pytest.raises(TypeError):
    write_json_atomic(path, {"fid": object()})  # Not JSON: fails mid-write.
  assert read_json(path) == {"fid": 1.5}
  assert os.listdir(tmp_path) == ["eval.json"]
  with pytest.raises(RuntimeError, match="stop"):
    with atomic_write(str(tmp_path / "new.txt")) as file:
      file.write("partial")
      raise RuntimeError("stop")
  assert os.listdir(tmp_path) == ["eval.json"]
  with open(path) as file:
    assert json.load(file) == {"fid": 1.5}
