"""One writer per work directory: an OS file lock held while a process writes a run.

A training run (or a sweep launcher) takes `DIR/.writer.lock` with `fcntl.flock` before
it writes anything. The lock belongs to the open file, so the kernel releases it when
the process ends in any way (SIGKILL included): a stale lock file never blocks a
relaunch. A second writer fails at once with a `WorkdirError` naming the holder (its
pid, host and command, which the holder writes into the lock file). Readers (`sample`,
`evaluate`, `report`) take no lock.

Within one process the lock is reentrant (a sweep of in-process runs, tests), and it is
released when the outermost holder leaves.
"""

import contextlib
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator

from cnnjax.errors import WorkdirError

LOCK_FILE = ".writer.lock"

_HELD: dict[str, list] = {}   # Absolute workdir -> [open lock file, depth].


def _describe_holder(lock_path: str) -> str:
  try:
    with open(lock_path) as file:
      holder = json.loads(file.read() or "{}")
  except (OSError, ValueError):
    holder = {}
  if not holder:
    return "another process"
  return (f"process {holder.get('pid')} on {holder.get('host')} "
          f"({holder.get('command', '?')})")


def _acquire(workdir: str):
  lock_path = os.path.join(workdir, LOCK_FILE)
  try:
    file = open(lock_path, "a+")   # "a+": never truncates the holder's description.
  except OSError as error:
    raise WorkdirError(f"Cannot create the lock file {lock_path} ({error.strerror}); "
                       "choose a writable --workdir.") from None
  try:
    fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    file.close()
    raise WorkdirError(
        f"{workdir} is in use by {_describe_holder(lock_path)}; wait for it to finish "
        "or stop it (SIGTERM checkpoints), or pass another --workdir.") from None
  file.seek(0)
  file.truncate()
  file.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                         "command": " ".join(sys.argv)[:300]}))
  file.flush()
  return file


@contextlib.contextmanager
def workdir_lock(workdir: str, *, enabled: bool = True) -> Iterator[None]:
  """Holds the writer lock of the existing directory `workdir` for the block.

  Args:
    workdir: the work directory (created already).
    enabled: False takes no lock (processes other than 0 of a multi-process run: the
      run holds one lock, taken by process 0).

  Raises:
    WorkdirError: another live process holds the lock (the message names it).
  """
  if not enabled:
    yield
    return
  key = os.path.realpath(workdir)
  if key in _HELD:
    _HELD[key][1] += 1
  else:
    _HELD[key] = [_acquire(key), 1]
  try:
    yield
  finally:
    _HELD[key][1] -= 1
    if _HELD[key][1] == 0:
      file = _HELD.pop(key)[0]
      with contextlib.suppress(OSError):
        file.seek(0)
        file.truncate()
      file.close()   # Closing releases the flock.
