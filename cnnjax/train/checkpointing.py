"""Orbax checkpoints of a run: training state and input-iterator position, together.

A checkpoint is written asynchronously into a temporary directory and renamed when
complete, so a run killed at any moment (during a save too) leaves only complete
checkpoints behind; leftovers of interrupted saves are removed when the run restarts.
Restoring walks back from the newest checkpoint, moving aside any that cannot be read.
"""

import os
import shutil
from typing import Any, Mapping

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint.checkpoint_managers import preservation_policy

from cnnjax.errors import CheckpointError, ConfigError
from cnnjax.io.write_errors import reporting_write_errors

CHECKPOINT_DIR = "checkpoints"
CORRUPT_DIR = "checkpoints_corrupt"
BEST_MODES = ("min", "max")


def validate_checkpoint_config(config: ml_collections.ConfigDict) -> None:
  """Raises `ConfigError` for a bad `checkpoint` section."""
  if config.every <= 0:
    raise ConfigError(f"checkpoint.every must be positive, got {config.every}.")
  if config.keep <= 0:
    raise ConfigError(f"checkpoint.keep must be positive, got {config.keep}.")
  if config.best_mode not in BEST_MODES:
    raise ConfigError(f"checkpoint.best_mode must be 'min' or 'max', got "
                      f"{config.best_mode!r}.")


class Checkpointer:
  """Saves and restores `{state, data iterator}` checkpoints under `workdir/checkpoints`.

  Keeps the newest `keep` checkpoints and, when `best_metric` is set, also the one with
  the best value of that metric (as logged with the save).
  """

  def __init__(self, workdir: str, config: ml_collections.ConfigDict, *,
               read_only: bool = False):
    """Args:
      workdir: the run's directory.
      config: the `checkpoint` config section.
      read_only: never write, clean up or move anything (sampling, evaluation).
    """
    self._workdir = workdir
    self._read_only = read_only
    self._best_metric = config.best_metric
    policies = [preservation_policy.LatestN(n=config.keep)]
    if config.best_metric:
      policies.append(preservation_policy.BestN(
          get_metric_fn=lambda metrics: metrics[config.best_metric],
          reverse=config.best_mode == "min", n=1,
          keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=preservation_policy.AnyPreservationPolicy(policies),
        enable_async_checkpointing=config.async_save,
        cleanup_tmp_directories=not read_only,
        create=not read_only,
        read_only=read_only)
    self._manager = ocp.CheckpointManager(
        os.path.join(workdir, CHECKPOINT_DIR), options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": grain.checkpoint.CheckpointHandler()})

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, data_iterator: Any | None = None,
           metrics: Mapping[str, float] | None = None) -> None:
    """Starts saving `state` (and the iterator position) as checkpoint `step`."""
    if step in self._manager.all_steps():
      return
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    if self._best_metric and (metrics is None or self._best_metric not in metrics):
      metrics = None
    # A failed earlier asynchronous save surfaces here (or in `wait`).
    with reporting_write_errors(f"checkpoint {step} into {self._workdir}/{CHECKPOINT_DIR}"):
      self._manager.save(step, args=ocp.args.Composite(**items),
                         metrics=dict(metrics) if metrics else None, force=True)

  def restore(self, abstract_state: Any, data_iterator: Any | None = None,
              step: int | None = None) -> tuple[Any, int] | None:
    """Restores the newest readable checkpoint (or exactly `step`).

    A checkpoint that cannot be read is moved to `workdir/checkpoints_corrupt` with a
    warning, and the previous one is tried.

    Args:
      abstract_state: a pytree of `jax.ShapeDtypeStruct`s (with shardings) to restore into.
      data_iterator: a grain iterator whose position is restored in place, or None.
      step: a specific step to restore; its failure is an error, not a fallback.

    Returns:
      (state, step), or None when there is no checkpoint.

    Raises:
      CheckpointError: `step` does not exist or cannot be read.
    """
    if step is not None and step not in self._manager.all_steps():
      raise CheckpointError(
          f"No checkpoint at step {step} in {self._workdir}; available steps: "
          f"{self.all_steps() or 'none'}.")
    candidates = [step] if step is not None else self.all_steps()[::-1]
    for candidate in candidates:
      items = {"state": ocp.args.StandardRestore(abstract_state)}
      if data_iterator is not None:
        items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
      try:
        restored = self._manager.restore(candidate, args=ocp.args.Composite(**items))
        return restored["state"], candidate
      except Exception as error:  # Orbax raises many types for unreadable files.
        if step is not None:
          raise CheckpointError(f"Checkpoint {candidate} in {self._workdir} cannot be "
                                f"read ({type(error).__name__}).") from error
        logging.warning("Checkpoint %d is unreadable (%s: %s); falling back to the "
                        "previous one.", candidate, type(error).__name__,
                        str(error).splitlines()[0] if str(error) else "")
        if not self._read_only:
          self._quarantine(candidate)
    return None

  def _quarantine(self, step: int) -> None:
    """Moves an unreadable checkpoint out of orbax's directory (process 0 only)."""
    if jax.process_index() == 0:
      source = os.path.join(self._workdir, CHECKPOINT_DIR, str(step))
      target_dir = os.path.join(self._workdir, CORRUPT_DIR)
      os.makedirs(target_dir, exist_ok=True)
      target = os.path.join(target_dir, str(step))
      if os.path.exists(target):
        shutil.rmtree(target)
      shutil.move(source, target)
    self._manager.reload()

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are complete."""
    with reporting_write_errors(f"a checkpoint into {self._workdir}/{CHECKPOINT_DIR}"):
      self._manager.wait_until_finished()

  def close(self) -> None:
    with reporting_write_errors(f"a checkpoint into {self._workdir}/{CHECKPOINT_DIR}"):
      self._manager.close()
