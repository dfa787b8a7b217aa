"""Metrics as JSON lines and TensorBoard event files, written by process 0 only."""

import json
import os
from typing import Mapping

import numpy as np
from tensorboardX import SummaryWriter

from cnnjax.io.atomic import atomic_write

METRICS_FILE = "metrics.jsonl"


def _drop_records_after(path: str, step: int) -> None:
  """Rewrites a metrics.jsonl without the records of steps after `step` (atomically)."""
  with open(path) as file:
    lines = [line for line in file if line.strip()]
  kept = [line for line in lines if json.loads(line)["step"] <= step]
  if len(kept) == len(lines):
    return
  with atomic_write(path) as file:
    file.writelines(kept)


class MetricsWriter:
  """Appends `{"step": ..., name: value}` lines to `metrics.jsonl` and mirrors them to
  TensorBoard. A no-op when `enabled` is False (processes other than 0).

  When a run resumes at `resume_step`, records of later steps (written after that
  checkpoint by the interrupted run) are dropped, so each step appears once.
  """

  def __init__(self, workdir: str, *, enabled: bool = True, resume_step: int = 0):
    self._enabled = enabled
    if not enabled:
      return
    path = os.path.join(workdir, METRICS_FILE)
    if resume_step and os.path.exists(path):
      _drop_records_after(path, resume_step)
    self._jsonl = open(path, "a", buffering=1)  # Line-buffered: survives SIGKILL.
    self._tensorboard = SummaryWriter(
        os.path.join(workdir, "tensorboard"),
        purge_step=resume_step + 1 if resume_step else None)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self._enabled:
      return
    record = {"step": int(step)}
    record.update({name: float(value) for name, value in scalars.items()})
    self._jsonl.write(json.dumps(record) + "\n")
    for name, value in scalars.items():
      self._tensorboard.add_scalar(name, float(value), int(step))

  def write_image(self, step: int, name: str, image_hwc: np.ndarray) -> None:
    """Logs a uint8 (H, W, C) image to TensorBoard."""
    if self._enabled:
      self._tensorboard.add_image(name, image_hwc, int(step), dataformats="HWC")

  def flush(self) -> None:
    if self._enabled:
      self._jsonl.flush()
      self._tensorboard.flush()

  def close(self) -> None:
    if self._enabled:
      self._jsonl.close()
      self._tensorboard.close()
