"""`checkpoint.best_metric` checked against the metrics a run logs with its checkpoints.

A checkpoint is saved with the metrics of the last logged step (the train step's own,
plus the runtime's `LOOP_METRICS`) and the evaluation of its own step. The train step's
names are known before anything runs, from `jax.eval_shape` of the step on one batch's
shapes; an evaluation's names once it first runs (`check_evaluated`).
"""

import functools
from typing import Any, Collection, Mapping, Optional

import jax
import ml_collections

from cnnjax.errors import ConfigError

# Added to every logged step by the training loop.
LOOP_METRICS = ("nonfinite_steps", "steps_per_sec", "wall_time")


def step_metric_names(program: Any, host_batch: Optional[Mapping[str, Any]]) -> set[str]:
  """The names of `program.train_step`'s metrics, traced (not compiled or run).

  Args:
    program: has `init_state()` and `train_step(state, batch) -> (state, metrics)`.
    host_batch: this process's slice of one batch (arrays), or None (no input data).
  """
  count = jax.process_count()
  batch = {} if host_batch is None else {
      name: jax.ShapeDtypeStruct((value.shape[0] * count, *value.shape[1:]), value.dtype)
      for name, value in host_batch.items()}
  _, metrics = _eval_shape(program.train_step, _eval_shape(program.init_state), batch)
  return set(metrics) | set(LOOP_METRICS)


def _eval_shape(function, *args, **kwargs):
  """`jax.eval_shape` of `function`, through `functools.partial`s, calling a jitted
  function's own `eval_shape`: inside another trace it would be a nested jit, where
  `compiler_options` are refused."""
  while isinstance(function, functools.partial):
    args, kwargs = (*function.args, *args), {**function.keywords, **kwargs}
    function = function.func
  if hasattr(function, "eval_shape"):
    return function.eval_shape(*args, **kwargs)
  return jax.eval_shape(function, *args, **kwargs)


def check_best_metric(config: ml_collections.ConfigDict, logged_names: Collection[str],
                      *, evaluates: bool) -> None:
  """Raises `ConfigError` if `checkpoint.best_metric` is set, is not among the step's
  `logged_names` and cannot come from an evaluation either (`evaluates` False)."""
  name = config.checkpoint.best_metric
  if not name or name in logged_names or evaluates:
    return
  raise ConfigError(
      f"checkpoint.best_metric={name!r} is not a metric this run logs; it logs "
      f"{', '.join(sorted(logged_names))} (and, with eval.every > 0, its evaluation's "
      "scores such as fid).")


def check_evaluated(config: ml_collections.ConfigDict, logged_names: Collection[str],
                    evaluated_names: Collection[str]) -> None:
  """At the first evaluation: raises `ConfigError` if `checkpoint.best_metric` is set
  and is neither a step metric nor one of the evaluation's."""
  name = config.checkpoint.best_metric
  if not name or name in logged_names or name in evaluated_names:
    return
  raise ConfigError(
      f"checkpoint.best_metric={name!r} is not a metric this run logs; its steps log "
      f"{', '.join(sorted(logged_names))} and its evaluation "
      f"{', '.join(sorted(evaluated_names))}; the checkpoints saved so far are kept.")
