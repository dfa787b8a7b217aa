"""Failed writes of run outputs (full disk, read-only or unwritable files) as one-line
`WorkdirError`s that say what could not be written and how to recover."""

import contextlib
import errno
from collections.abc import Iterator

from cnnjax.errors import WorkdirError

_FULL = {errno.ENOSPC, errno.EDQUOT}
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}


def _os_error_in(error: BaseException) -> OSError | None:
  """The first OSError among `error`, its causes and contexts (orbax wraps them)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno is not None:
      return error
    error = error.__cause__ or error.__context__
  return None


def as_workdir_error(what: str, error: BaseException) -> WorkdirError | None:
  """The `WorkdirError` for a failed write of `what`, or None if `error` is not one."""
  os_error = _os_error_in(error)
  code = os_error.errno if os_error is not None else None
  if code in _FULL or "No space left on device" in str(error):
    return WorkdirError(f"Disk full writing {what}: free space and relaunch (the run "
                        "resumes from its newest complete checkpoint).")
  if code in _DENIED:
    return WorkdirError(f"Cannot write {what} ({os_error.strerror}); make the work "
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
