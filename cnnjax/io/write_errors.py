"""Failed writes of run outputs (full disk, read-only or unwritable files) as one-line
`WorkdirError`s that say what could not be written and how to recover."""

import contextlib
import errno
from collections.abc import Iterator

from cnnjax.errors import WorkdirError

_FULL = {errno.ENOSPC, errno.EDQUOT}
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}


def _chain(error: BaseException | None) -> list[BaseException]:
  """`error`, its causes and contexts (orbax and tensorstore wrap the OSError)."""
  chain = []
  while error is not None and all(error is not seen for seen in chain):
    chain.append(error)
    error = error.__cause__ or error.__context__
  return chain


def as_workdir_error(what: str, error: BaseException) -> WorkdirError | None:
  """The `WorkdirError` for a failed write of `what`, or None if `error` is not one."""
  chain = _chain(error)
  os_error = next((e for e in chain if isinstance(e, OSError) and e.errno is not None),
                  None)
  code = os_error.errno if os_error is not None else None
  # Tensorstore's errors (orbax's array writes) carry only the text of the OS's error.
  if code in _FULL or any("No space left on device" in str(e) for e in chain):
    return WorkdirError(f"Disk full writing {what}: free space and relaunch (the run "
                        "resumes from its newest complete checkpoint).")
  if code in _DENIED or any("Read-only file system" in str(e) for e in chain):
    return WorkdirError(f"Cannot write {what} (permission denied or read-only); make the work "
                        "directory writable and relaunch.")
  return None


@contextlib.contextmanager
def reporting_write_errors(what: str) -> Iterator[None]:
  """Re-raises a full-disk or permission failure inside the block as a `WorkdirError`."""
  try:
    yield
  except WorkdirError:
    raise
  except Exception as error:  # OSError, or orbax's wrappers of one.
    converted = as_workdir_error(what, error)
    if converted is None:
      raise
    raise converted from error
