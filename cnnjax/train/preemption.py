"""SIGTERM/SIGINT as a request to stop cleanly: the loop checkpoints and returns."""

import signal
import threading
from types import FrameType

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class PreemptionSignal:
  """Context manager: while active, SIGTERM and SIGINT set `requested` instead of
  killing the process. Outside the main thread (where handlers cannot be set) it only
  ever reports False."""

  def __init__(self):
    self._event = threading.Event()
    self._previous = {}

  @property
  def requested(self) -> bool:
    return self._event.is_set()

  def agreed(self, is_sync_point: bool) -> bool:
    """Whether to stop now, the same answer in every process.

    With one process this is `requested`. With several, the processes must stop (and
    save, collectively) at the same step, so they agree by an all-gather, made only at
    `is_sync_point` steps (logging steps) to keep the loop free of per-step syncs.
    """
    if jax.process_count() == 1:
      return self.requested
    if not is_sync_point:
      return False
    flags = multihost_utils.process_allgather(np.array(self.requested))
    return bool(np.any(flags))

  def _handle(self, signum: int, frame: FrameType | None) -> None:
    del frame
    logging.warning("Received %s: saving a checkpoint and stopping.",
                    signal.Signals(signum).name)
    self._event.set()

  def __enter__(self) -> "PreemptionSignal":
    if threading.current_thread() is threading.main_thread():
      for signum in _SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
