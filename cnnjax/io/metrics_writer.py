"""Metrics as JSON lines and TensorBoard event files, written by process 0 only.

Both are written synchronously, one whole record per write: a full disk raises `OSError`
in the training loop (which turns it into a one-line error) and leaves no torn line or
record behind.
"""

import errno
import json
import os
from typing import Mapping

import numpy as np

from cnnjax.io.atomic import atomic_write
from cnnjax.io.event_file import EventFileWriter
from cnnjax.io.write_errors import reporting_write_errors

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def _complete_records(path: str) -> list[str]:
  """The whole lines of a metrics.jsonl: a torn last line (a write cut short by a full
  disk or a kill) is not one."""
  with open(path) as file:
    lines = file.readlines()
  complete = []
  for line in lines:
    if not line.endswith("\n"):
      break
    try:
      json.loads(line)
    except ValueError:
      break
    complete.append(line)
  return complete


def _drop_records_after(path: str, step: int) -> None:
  """Rewrites a metrics.jsonl without the records of steps after `step` and without a
  torn tail (atomically)."""
  with open(path) as file:
    original = file.read()
  kept = [line for line in _complete_records(path) if json.loads(line)["step"] <= step]
  if "".join(kept) != original:
    with atomic_write(path) as file:
      file.writelines(kept)


class MetricsWriter:
  """Appends `{"step": ..., name: value}` lines to `metrics.jsonl` and mirrors them to
  TensorBoard. A no-op when `enabled` is False (processes other than 0). A full disk or
  an unwritable file is a one-line `WorkdirError` from the call that hit it.

  When a run resumes at `resume_step`, records of later steps (written after that
  checkpoint by the interrupted run) are dropped, so each step appears once.
  """

  def __init__(self, workdir: str, *, enabled: bool = True, resume_step: int = 0):
    self._enabled = enabled
    if not enabled:
      return
    path = self._path = os.path.join(workdir, METRICS_FILE)
    with reporting_write_errors(f"{path} and {TENSORBOARD_DIR}/"):
      if os.path.exists(path):   # Also a fresh start (step 0) after an early kill.
        _drop_records_after(path, resume_step)
      # Unbuffered appends, one write per line: a kill leaves whole lines only.
      self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
      self._tensorboard = EventFileWriter(
          os.path.join(workdir, TENSORBOARD_DIR),
          purge_step=resume_step + 1 if resume_step else None)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self._enabled:
      return
    record = {"step": int(step)}
    record.update({name: float(value) for name, value in scalars.items()})
    line = (json.dumps(record) + "\n").encode()
    with reporting_write_errors(f"the metrics of step {step} ({self._path})"):
      size = os.fstat(self._fd).st_size
      try:
        written = os.write(self._fd, line)
        if written != len(line):
          raise OSError(errno.ENOSPC, "short write", self._path)
      except OSError:
        os.ftruncate(self._fd, size)   # Never leave a torn line behind.
        raise
    with reporting_write_errors(f"the TensorBoard scalars of step {step}"):
      self._tensorboard.add_scalars(step, scalars)

  def write_image(self, step: int, name: str, image_hwc: np.ndarray) -> None:
    """Logs a uint8 (H, W, C) image to TensorBoard."""
    if self._enabled:
      with reporting_write_errors(f"the TensorBoard image {name} of step {step}"):
        self._tensorboard.add_image(step, name, image_hwc)

  def close(self) -> None:
    if self._enabled:
      os.close(self._fd)
      self._tensorboard.close()
