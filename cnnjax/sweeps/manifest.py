"""A sweep's launch units and its manifest `DIR/sweep.json` (shared by the local and
SLURM launchers and the report)."""

import dataclasses
import datetime
import json
import os
from typing import Any

from absl import logging

from cnnjax.io.workdir import read_json, write_json_atomic
from cnnjax.sweeps.spec import REPO_ROOT, SEED_FIELD, Run, SweepPlan

MANIFEST_FILE = "sweep.json"
LOG_DIR = "logs"
CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.jsonl"


@dataclasses.dataclass(frozen=True)
class LaunchUnit:
  """One process of a sweep: a run, or (vmap_seeds) every seed of one setting.

  Attributes:
    name: the run's name, or `<setting>,vmap_seeds`; names its log files.
    runs: the runs it trains.
    argv: the arguments after the Python executable, run from the repository root.
  """
  name: str
  runs: tuple[Run, ...]
  argv: tuple[str, ...]


def run_workdir(workdir: str, run: Run) -> str:
  return os.path.join(workdir, run.name)


def launch_units(plan: SweepPlan, workdir: str) -> list[LaunchUnit]:
  """The processes that train `plan`'s runs into `workdir/<run name>`."""
  config_arg = f"--config={plan.sweep.config_arg}"
  if not plan.sweep.vmap_seeds:
    return [LaunchUnit(name=run.name, runs=(run,), argv=(
        "run.py", config_arg, *run.config_flags(),
        f"--workdir={run_workdir(workdir, run)}")) for run in plan.runs]
  units = []
  for setting, runs in plan.settings().items():
    shared = [flag for flag in runs[0].config_flags()
              if not flag.startswith(f"--config.{SEED_FIELD}=")]
    per_seed = [arg for run in runs
                for arg in (f"--seed={run.seed}", f"--workdir={run_workdir(workdir, run)}")]
    units.append(LaunchUnit(name=f"{setting},vmap_seeds", runs=tuple(runs), argv=(
        "-m", "cnnjax.sweeps.vmap_seeds", config_arg, *shared, *per_seed)))
  return units


def is_finished(run_dir: str, num_steps: int) -> bool:
  """Whether a run's final checkpoint and metrics reach `num_steps`."""
  if not os.path.isdir(os.path.join(run_dir, CHECKPOINT_DIR, str(num_steps))):
    return False
  metrics_path = os.path.join(run_dir, METRICS_FILE)
  if not os.path.isfile(metrics_path):
    return False
  with open(metrics_path) as file:
    lines = [line for line in file if line.strip()]
  return bool(lines) and json.loads(lines[-1]).get("step", -1) >= num_steps


def now() -> str:
  """The UTC time, to the second, as the manifest records it."""
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class Manifest:
  """`DIR/sweep.json`: the sweep and every run's command and status, rewritten on change."""

  def __init__(self, workdir: str, plan: SweepPlan, launcher: str, **details: Any):
    self.path = os.path.join(workdir, MANIFEST_FILE)
    previous = {}
    if os.path.isfile(self.path):
      try:
        previous = {entry["name"]: entry for entry in read_json(self.path).get("runs", [])}
      except (OSError, ValueError, KeyError, AttributeError):
        logging.warning("Ignoring the unreadable manifest %s.", self.path)
    inside_repo = plan.sweep_path.startswith(REPO_ROOT + os.sep)
    self.header = {"sweep": (os.path.relpath(plan.sweep_path, REPO_ROOT) if inside_repo
                             else plan.sweep_path),
                   "name": plan.name, "description": plan.sweep.description,
                   "config": plan.sweep.config_arg, "seeds": list(plan.sweep.seeds),
                   "vmap_seeds": plan.sweep.vmap_seeds, "launcher": launcher,
                   "report_metric": plan.sweep.report_metric,
                   "summary_metrics": list(plan.sweep.summary_metrics), **details}
    self.runs: dict[str, dict[str, Any]] = {}
    for run in plan.runs:
      entry = {"name": run.name, "setting": run.setting, "seed": run.seed,
               "overrides": run.overrides, "num_steps": run.num_steps,
               "status": "pending", "error": None, "attempts": 0}
      old = previous.get(run.name, {})
      for key in ("status", "error", "attempts", "returncode", "command", "devices",
                  "started", "ended", "duration_s"):
        if key in old:
          entry[key] = old[key]
      self.runs[run.name] = entry

  def update(self, run: Run, **fields: Any) -> None:
    self.runs[run.name].update(fields)

  def write(self) -> None:
    write_json_atomic(self.path, {**self.header, "updated": now(),
                                  "runs": list(self.runs.values())})
