"""Atomic file replacement: readers see the old file or the new one, never half of one."""

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import IO


def _process_umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


# Read once, at import (os.umask can only be read by setting it, which is not
# thread-safe later, when checkpoint threads may be creating files).
_UMASK = _process_umask()


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w") -> Iterator[IO]:
  """Opens a temporary file beside `path` that replaces `path` when the block succeeds.

  The new file gets the permissions `open(path, "w")` would give it (0o666 less the
  umask), not the temporary file's 0o600, so other users and services (TensorBoard, a
  web server) can read run outputs. If the block raises, the temporary file is
  removed and `path` is left as it was.

  Args:
    path: the file to write.
    mode: "w" (text) or "wb" (binary).

  Yields:
    The open temporary file.
  """
  directory = os.path.dirname(os.path.abspath(path))
  tmp = tempfile.NamedTemporaryFile(mode, dir=directory, delete=False,
                                    prefix=os.path.basename(path) + ".", suffix=".tmp")
  try:
    with tmp:
      yield tmp
    os.chmod(tmp.name, 0o666 & ~_UMASK)
    os.replace(tmp.name, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp.name)
    raise
