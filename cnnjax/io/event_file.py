"""TensorBoard event files written synchronously, one record per `os.write`.

tensorboardX's `SummaryWriter` queues events to a background thread, so a full disk
surfaces there, late or never, and may leave a torn record. This writer builds the same
`Event` protocol buffers (tensorboardX's `summary` helpers) and appends each framed
record (length, masked CRC-32C, data, masked CRC-32C, the TFRecord format) with one
unbuffered write in the caller's thread: a failed write raises `OSError` at once and the
file is truncated back to its last whole record.
"""

import itertools
import os
import socket
import struct
import time
from typing import Iterator

import numpy as np
from tensorboardX import summary as tb_summary
from tensorboardX.proto import event_pb2, summary_pb2
from tensorboardX.record_writer import masked_crc32c

FILE_VERSION = "brain.Event:2"
_FILE_NUMBERS = itertools.count()   # Two writers of one process in one second differ.


def _framed(data: bytes) -> bytes:
  header = struct.pack("Q", len(data))
  return (header + struct.pack("I", masked_crc32c(header)) + data +
          struct.pack("I", masked_crc32c(data)))


class EventFileWriter:
  """Appends events to a new `events.out.tfevents.*` file in `logdir`.

  When a run resumes at `purge_step`, the file starts with TensorBoard's purge marker:
  events of the earlier files at steps >= `purge_step` are hidden.
  """

  def __init__(self, logdir: str, *, purge_step: int | None = None):
    os.makedirs(logdir, exist_ok=True)
    self.path = os.path.join(
        logdir, f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}."
        f"{os.getpid()}.{next(_FILE_NUMBERS)}")
    self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL,
                       0o666)
    self._write(event_pb2.Event(wall_time=time.time(), file_version=FILE_VERSION))
    if purge_step is not None:
      self._write(event_pb2.Event(wall_time=time.time(), step=purge_step,
                                  session_log=event_pb2.SessionLog(
                                      status=event_pb2.SessionLog.START)))

  def _write(self, event: event_pb2.Event) -> None:
    record = _framed(event.SerializeToString())
    size = os.fstat(self._fd).st_size
    try:
      if os.write(self._fd, record) != len(record):
        raise OSError(28, "short write", self.path)   # ENOSPC
    except OSError:
      os.ftruncate(self._fd, size)   # Never leave a torn record behind.
      raise

  def add_scalars(self, step: int, scalars: dict[str, float]) -> None:
    """One event holding every scalar of `step`."""
    values = [value for name, number in scalars.items()
              for value in tb_summary.scalar(name, float(number)).value]
    self._write(event_pb2.Event(wall_time=time.time(), step=int(step),
                                summary=summary_pb2.Summary(value=values)))

  def add_image(self, step: int, name: str, image_hwc: np.ndarray) -> None:
    """A uint8 (H, W, C) image as a PNG."""
    self._write(event_pb2.Event(wall_time=time.time(), step=int(step),
                                summary=tb_summary.image(name, image_hwc,
                                                         dataformats="HWC")))

  def close(self) -> None:
    os.close(self._fd)


def read_events(path: str) -> Iterator[event_pb2.Event]:
  """The events of one event file, checking every record's CRCs.

  Raises:
    ValueError: a torn or corrupt record.
  """
  with open(path, "rb") as file:
    data = file.read()
  offset = 0
  while offset < len(data):
    if len(data) - offset < 12:
      raise ValueError(f"{path}: torn record header at byte {offset}.")
    header = data[offset:offset + 8]
    (length,) = struct.unpack("Q", header)
    (header_crc,) = struct.unpack("I", data[offset + 8:offset + 12])
    end = offset + 12 + length + 4
    if header_crc != masked_crc32c(header) or end > len(data):
      raise ValueError(f"{path}: torn or corrupt record at byte {offset}.")
    body = data[offset + 12:offset + 12 + length]
    (body_crc,) = struct.unpack("I", data[end - 4:end])
    if body_crc != masked_crc32c(body):
      raise ValueError(f"{path}: corrupt record at byte {offset}.")
    yield event_pb2.Event.FromString(body)
    offset = end


def read_scalars(logdir: str) -> dict[str, dict[int, float]]:
  """Every scalar of a run's event files, `{name: {step: value}}`, the files in the
  order they were started, honouring purge markers (a resumed run's file hides the
  earlier files' events at and after its step).

  Raises:
    ValueError: a torn or corrupt record.
  """
  files = []
  for name in os.listdir(logdir):
    if ".tfevents." in name:
      events = list(read_events(os.path.join(logdir, name)))
      files.append((events[0].wall_time if events else 0.0, name, events))
  scalars: dict[str, dict[int, float]] = {}
  for _, _, events in sorted(files):
    for event in events:
      if event.session_log.status == event_pb2.SessionLog.START:
        for series in scalars.values():
          for step in [s for s in series if s >= event.step]:
            del series[step]
      for value in event.summary.value:
        if value.HasField("simple_value"):
          scalars.setdefault(value.tag, {})[int(event.step)] = value.simple_value
  return scalars
