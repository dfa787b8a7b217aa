"""`run.py sweep --launcher=slurm`: a SLURM array job, one task per launch unit.

Writes `DIR/sweep_commands.txt` (task i runs line i + 1: the arguments of the same
command the local launcher would run, after the Python executable) and `DIR/sweep.slurm`
(`#SBATCH --array=0-(N-1)`), and returns how to submit it. Runs already finished are
left out, so writing the job again after a partial run submits only what remains; a
task that is requeued or resubmitted resumes its run from the newest checkpoint. SLURM
signals a task 120 s before its time limit, which the runtime turns into a checkpoint.
"""

import os
import shlex
import sys
from typing import Sequence

from cnnjax.sweeps.manifest import LaunchUnit, Manifest
from cnnjax.sweeps.spec import REPO_ROOT, SweepPlan

SCRIPT_FILE = "sweep.slurm"
COMMANDS_FILE = "sweep_commands.txt"
SLURM_LOG_DIR = "slurm"


def sbatch_options(plan: SweepPlan, workdir: str, num_tasks: int,
                   devices_per_run: int | None) -> dict[str, str]:
  """The `#SBATCH` options: array, logs, GPUs per task, then the sweep's own (which win;
  an empty value drops an option)."""
  log_dir = os.path.join(workdir, SLURM_LOG_DIR)
  options = {
      "job-name": f"cnnjax-{plan.name}",
      "array": f"0-{num_tasks - 1}",
      "output": os.path.join(log_dir, "%A_%a.out"),
      "error": os.path.join(log_dir, "%A_%a.err"),
      "open-mode": "append",
      "signal": "B:TERM@120",
      "gres": f"gpu:{devices_per_run or 1}",
  }
  options.update({key: str(value) for key, value in plan.sweep.slurm.items()})
  return {key: value for key, value in options.items() if value != ""}


def render_script(options: dict[str, str], commands_path: str, python: str) -> str:
  """The array job script: each task reads its line of `commands_path` and runs it."""
  header = "\n".join(f"#SBATCH --{key}={value}" for key, value in options.items())
  return f"""#!/bin/bash
{header}
# Written by `python run.py sweep --launcher=slurm`; task i runs line i + 1 of
# {commands_path} from the repository root. Submit with: sbatch {{this file}}.
set -euo pipefail
cd {shlex.quote(REPO_ROOT)}
PYTHON=${{PYTHON:-{shlex.quote(python)}}}
ARGS=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(commands_path)})
if [ -z "$ARGS" ]; then
  echo "No command for array task $SLURM_ARRAY_TASK_ID in {commands_path}" >&2
  exit 2
fi
eval "set -- $ARGS"
echo "Task $SLURM_ARRAY_TASK_ID on $(hostname): $PYTHON $*" >&2
exec "$PYTHON" "$@"
"""


def write_slurm_job(plan: SweepPlan, workdir: str, units: Sequence[LaunchUnit],
                    manifest: Manifest, *, devices_per_run: int | None = None,
                    python: str | None = None) -> str:
  """Writes the job for `units` (the unfinished ones) and returns what to run next."""
  python = python or sys.executable
  script_path = os.path.join(workdir, SCRIPT_FILE)
  commands_path = os.path.join(workdir, COMMANDS_FILE)
  for task, unit in enumerate(units):
    for run in unit.runs:
      manifest.update(run, command=shlex.join([python, *unit.argv]), slurm_task=task)
  manifest.write()
  if not units:
    return (f"All {len(plan.runs)} runs of {plan.name} are finished; nothing to submit. "
            f"Report: python run.py report --workdir={workdir}")
  os.makedirs(os.path.join(workdir, SLURM_LOG_DIR), exist_ok=True)
  with open(commands_path, "w") as file:
    file.writelines(shlex.join(unit.argv) + "\n" for unit in units)
  options = sbatch_options(plan, workdir, len(units), devices_per_run)
  with open(script_path, "w") as file:
    file.write(render_script(options, commands_path, python))
  os.chmod(script_path, 0o755)
  finished = len(plan.runs) - sum(len(unit.runs) for unit in units)
  return (f"Wrote {script_path}: an array job of {len(units)} tasks for "
          f"{sum(len(unit.runs) for unit in units)} runs ({finished} already finished) "
          f"and {commands_path}.\nSubmit it with:\n  sbatch {script_path}\n"
          f"Then: python run.py report --workdir={workdir}")
