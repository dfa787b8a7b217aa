"""A finished run's description (`RunSpec`) and restored state (`OpenRun`), for a kind
the caller already knows (`open_as`); `cnnjax.runs.opening.open_run` finds the kind in
the registry first.
"""

import dataclasses
import os
from typing import Any

import jax
import ml_collections

from cnnjax.errors import CheckpointError, ConfigError
from cnnjax.io.workdir import load_run_config
from cnnjax.runs.kind import ExperimentKind
from cnnjax.train import parallel
from cnnjax.train.checkpointing import Checkpointer


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """A run's recorded description, before any state is restored.

  Attributes:
    workdir: the absolute work directory.
    config: the resolved, locked config the run trained with.
    data_info: its `data_info.json` (dataset name, split, image shape, classes, ...).
    kind: its `ExperimentKind`.
  """
  workdir: str
  config: ml_collections.ConfigDict
  data_info: dict[str, Any]
  kind: ExperimentKind

  def build_program(self, mesh: Any | None = None) -> Any:
    """The kind's program for this run (over every local device by default)."""
    return self.kind.build_program(self.config, mesh=mesh or parallel.make_data_mesh(),
                                   data_info=self.data_info)


@dataclasses.dataclass(frozen=True)
class OpenRun:
  """A finished run with its state restored from a checkpoint.

  Attributes:
    spec: the run's `RunSpec` (workdir, config, data_info, kind).
    program: the kind's program (jitted functions over the data mesh).
    state: the restored state (replicated over the mesh).
    step: the checkpoint's step.
  """
  spec: RunSpec
  program: Any
  state: Any
  step: int

  @property
  def workdir(self) -> str:
    return self.spec.workdir

  @property
  def config(self) -> ml_collections.ConfigDict:
    return self.spec.config

  @property
  def data_info(self) -> dict[str, Any]:
    return self.spec.data_info

  @property
  def kind(self) -> ExperimentKind:
    return self.spec.kind


def restore_state(spec: RunSpec, program: Any, step: int | None = None
                  ) -> tuple[Any, int]:
  """Restores `program`'s state from the run's checkpoint (read-only): (state, step).

  Raises:
    CheckpointError: no readable checkpoint, or none at `step`.
  """
  checkpointer = Checkpointer(spec.workdir, spec.config.checkpoint, read_only=True)
  try:
    restored = checkpointer.restore(jax.eval_shape(program.init_state), step=step)
  finally:
    checkpointer.close()
  if restored is None:
    raise CheckpointError(f"{spec.workdir} has no readable checkpoint yet; train longer "
                          "or pick a run with checkpoints.")
  return restored


def spec_as(workdir: str, kind: ExperimentKind, *, hint: str | None = None) -> RunSpec:
  """The `RunSpec` of a run that must be of `kind`.

  Raises:
    WorkdirError: `workdir` holds no training run.
    ConfigError: it holds a run of another kind (`hint` says how to get one).
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  config, data_info = load_run_config(workdir)
  experiment = config.get("experiment", "gan")
  if experiment != kind.name:
    raise ConfigError(f"{workdir} holds a {experiment!r} run, not a {kind.name!r} run; "
                      f"{hint or 'train one with `' + kind.config_hint + '`'}.")
  return RunSpec(workdir=workdir, config=config, data_info=data_info, kind=kind)


def open_spec(spec: RunSpec, step: int | None = None, *, mesh: Any | None = None
              ) -> "OpenRun":
  """Builds the program of `spec` and restores its state at `step` (default: newest).

  Raises:
    CheckpointError: no readable checkpoint (at `step`).
  """
  program = spec.build_program(mesh)
  state, restored_step = restore_state(spec, program, step)
  return OpenRun(spec=spec, program=program, state=state, step=restored_step)


def open_as(workdir: str, kind: ExperimentKind, step: int | None = None, *,
            hint: str | None = None, mesh: Any | None = None) -> OpenRun:
  """Opens a run that must be of `kind` (see `spec_as` and `open_spec`)."""
  return open_spec(spec_as(workdir, kind, hint=hint), step, mesh=mesh)
