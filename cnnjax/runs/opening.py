"""Opening a finished run from its work directory: its config, kind (from the
registry), program and restored state, read-only. Every command that reads a run
(`sample`, `evaluate`, `likelihood`, editing, ...) opens it here.
"""

import os
from typing import Any, Sequence

from cnnjax.errors import ConfigError
from cnnjax.io.workdir import load_run_config
from cnnjax.runs.registry import kind_of
from cnnjax.runs.restore import OpenRun, RunSpec, open_spec


def read_run(workdir: str, *, kinds: Sequence[str] | None = None,
             hint: str | None = None) -> RunSpec:
  """A run's recorded config and kind (nothing restored, nothing compiled).

  Args:
    workdir: the run's directory.
    kinds: the kinds the caller accepts (None: any).
    hint: how to get a run of those kinds, appended to the wrong-kind error.

  Raises:
    WorkdirError: `workdir` holds no training run.
    ConfigError: the run's kind is unknown, or not one of `kinds`.
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  config, data_info = load_run_config(workdir)
  kind = kind_of(config)
  if kinds is not None and kind.name not in kinds:
    wanted = " or ".join(repr(name) for name in kinds)
    raise ConfigError(f"{workdir} holds a {kind.name!r} run, not a {wanted} run"
                      f"{'; ' + hint if hint else '; pass the --workdir of one'}.")
  return RunSpec(workdir=workdir, config=config, data_info=data_info, kind=kind)


def open_run(workdir: str, step: int | None = None, *,
             kinds: Sequence[str] | None = None, hint: str | None = None,
             mesh: Any | None = None) -> OpenRun:
  """Opens a finished run: its config, kind, program and state at `step` (default:
  the newest readable checkpoint). Nothing in `workdir` is written.

  Args:
    workdir: the run's directory.
    step: the checkpoint to restore (None: the newest).
    kinds, hint: see `read_run`.
    mesh: the data mesh of the program (default: every local device).

  Returns:
    An `OpenRun` (`.config`, `.data_info`, `.kind`, `.program`, `.state`, `.step`).

  Raises:
    WorkdirError: `workdir` holds no training run.
    ConfigError: an unknown or unaccepted kind.
    CheckpointError: no readable checkpoint (at `step`).
  """
  return open_spec(read_run(workdir, kinds=kinds, hint=hint), step, mesh=mesh)
