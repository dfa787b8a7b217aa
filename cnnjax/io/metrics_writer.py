"""Metrics as JSON lines and TensorBoard event files, written by process 0 only."""

import json
import math
import os
from typing import Mapping

import numpy as np
from absl import logging
from tensorboardX import SummaryWriter

from cnnjax.errors import CnnjaxError


class NonFiniteError(CnnjaxError):
  """A logged quantity is NaN or infinite."""


def check_finite(step: int, scalars: Mapping[str, float]) -> None:
  """Raises `NonFiniteError` naming the step and the first non-finite quantity."""
  for name, value in scalars.items():
    if not math.isfinite(value):
      raise NonFiniteError(
          f"Training diverged: {name} = {value} at step {step}; lower the learning "
          "rates or change the loss, then rerun.")


class MetricsWriter:
  """Appends `{"step": ..., name: value}` lines to `metrics.jsonl` and mirrors them to
  TensorBoard. A no-op when `enabled` is False (processes other than 0)."""

  def __init__(self, workdir: str, *, enabled: bool = True):
    self._enabled = enabled
    if not enabled:
      return
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
    self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))

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
