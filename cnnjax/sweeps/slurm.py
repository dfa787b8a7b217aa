"""SLURM batch jobs: a sweep as an array job (`run.py sweep --launcher=slurm`) and one
run over several nodes (`run.py --launcher=slurm`).

Every job starts its run with `srun`, one process per task (`--nodes` x
`--tasks_per_node`), so that JAX's SLURM detection (`SLURM_JOB_ID`,
`SLURM_STEP_NODELIST`, `SLURM_NTASKS`, `SLURM_PROCID`, `SLURM_LOCALID`) connects the
processes into one multi-process run (`cnnjax.train.distributed`). Jobs are
`--requeue`able: 120 s before the time limit SLURM sends the batch shell USR1, which
asks the run to checkpoint (SIGTERM through srun to every task) and requeues the job;
the requeued job, like one requeued after preemption, resumes from the newest
checkpoint, because relaunching the same command on the same work directory resumes.

Sweep: `DIR/sweep_commands.txt` (array task i runs line i + 1: the arguments of the
command the local launcher would run, after the Python executable) and `DIR/sweep.slurm`
(`#SBATCH --array=0-(N-1)`). Runs already finished are left out, so writing the job
again after a partial run submits only what remains.

Single run: `DIR/slurm/run.slurm`, the same training command without the launch
flags, and its logs in `DIR/slurm/`.
"""

import dataclasses
import os
import shlex
import sys
from typing import Mapping, Sequence

from cnnjax.errors import ConfigError
from cnnjax.sweeps.manifest import LaunchUnit, Manifest
from cnnjax.sweeps.spec import REPO_ROOT, SweepPlan

SCRIPT_FILE = "sweep.slurm"
COMMANDS_FILE = "sweep_commands.txt"
SLURM_LOG_DIR = "slurm"
RUN_SCRIPT_FILE = "run.slurm"   # In DIR/slurm/ of a single run.
REQUEUE_SIGNAL = "USR1"
SECONDS_BEFORE_LIMIT = 120


@dataclasses.dataclass(frozen=True)
class JobShape:
  """The processes of one run (`srun` starts one per task).

  Attributes:
    nodes: machines of the run.
    tasks_per_node: processes per machine: 1 per host for TPU VMs and for one
      process driving every GPU of a node, or 1 per GPU.
    gpus_per_task: GPUs each process drives (0: none requested, e.g. CPU or TPU);
      None: the sweep's `--devices_per_run` as `--gres=gpu:N` (one process).
  """
  nodes: int = 1
  tasks_per_node: int = 1
  gpus_per_task: int | None = None

  @property
  def num_processes(self) -> int:
    return self.nodes * self.tasks_per_node

  def check(self) -> None:
    """Raises `ConfigError` (one line) for a shape SLURM cannot allocate."""
    for name in ("nodes", "tasks_per_node"):
      if getattr(self, name) < 1:
        raise ConfigError(f"--{name}={getattr(self, name)} must be >= 1.")
    if self.gpus_per_task is not None and self.gpus_per_task < 0:
      raise ConfigError(f"--gpus_per_task={self.gpus_per_task} must be >= 0.")

  def sbatch_options(self, devices_per_run: int | None = None) -> dict[str, str]:
    options = {"nodes": str(self.nodes), "ntasks-per-node": str(self.tasks_per_node)}
    if self.gpus_per_task is None:
      options["gres"] = f"gpu:{devices_per_run or 1}"
    elif self.gpus_per_task > 0:
      options["gpus-per-task"] = str(self.gpus_per_task)
    return options


def parse_options(pairs: Sequence[str]) -> dict[str, str]:
  """`KEY=VALUE` strings (the repeatable --slurm flag) as `#SBATCH` options.

  Raises:
    ConfigError: an entry without `=`.
  """
  options = {}
  for pair in pairs:
    key, separator, value = pair.partition("=")
    if not separator or not key.strip():
      raise ConfigError(f"--slurm={pair!r} is not KEY=VALUE, e.g. --slurm=partition=gpu "
                        "or --slurm=time=24:00:00.")
    options[key.strip().lstrip("-")] = value.strip()
  return options


def _base_options(job_name: str, log_dir: str, log_name: str) -> dict[str, str | bool]:
  return {
      "job-name": job_name,
      "output": os.path.join(log_dir, f"{log_name}.out"),
      "error": os.path.join(log_dir, f"{log_name}.err"),
      "open-mode": "append",       # A requeued job appends to the same logs.
      "requeue": True,             # A bare flag.
      "signal": f"B:{REQUEUE_SIGNAL}@{SECONDS_BEFORE_LIMIT}",
  }


def _header(options: Mapping[str, str | bool]) -> str:
  """`#SBATCH` lines: `--key=value`, or a bare `--key` for True."""
  return "\n".join(f"#SBATCH --{key}" + ("" if value is True else f"={value}")
                   for key, value in options.items())


def _kept(options: Mapping[str, str | bool]) -> dict[str, str | bool]:
  """`options` without those whose value is "" (how a user drops a default)."""
  return {key: value for key, value in options.items() if value != ""}


def render_script(options: Mapping[str, str | bool], arguments: str, python: str,
                  *, written_by: str, cwd: str = REPO_ROOT) -> str:
  """The batch script: `arguments` (bash that sets "$@" to the command's arguments after
  the Python executable) run by `srun`, one process per task, requeued near the time
  limit after the run has checkpointed."""
  return f"""#!/bin/bash
{_header(options)}
# Written by `{written_by}`. Submit with: sbatch {{this file}}.
# srun starts one process per task; JAX's SLURM detection connects them into one run.
set -euo pipefail
cd {shlex.quote(cwd)}
PYTHON=${{PYTHON:-{shlex.quote(python)}}}
{arguments}
checkpoint_and_requeue() {{
  echo "SLURM's time limit is near: checkpointing, then requeueing job $SLURM_JOB_ID." >&2
  kill -TERM "$RUN_PID" 2>/dev/null || true
  wait "$RUN_PID" || true
  scontrol requeue "$SLURM_JOB_ID"
  exit 0
}}
trap checkpoint_and_requeue {REQUEUE_SIGNAL}
echo "Job ${{SLURM_JOB_ID:-?}} on $(hostname), ${{SLURM_NTASKS:-1}} task(s): $PYTHON $*" >&2
srun --kill-on-bad-exit=1 "$PYTHON" "$@" &
RUN_PID=$!
wait "$RUN_PID"
"""


def _array_arguments(commands_path: str) -> str:
  return f"""ARGS=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(commands_path)})
if [ -z "$ARGS" ]; then
  echo "No command for array task $SLURM_ARRAY_TASK_ID in {commands_path}" >&2
  exit 2
fi
eval "set -- $ARGS\""""


def sbatch_options(plan: SweepPlan, workdir: str, num_tasks: int,
                   devices_per_run: int | None,
                   shape: JobShape = JobShape()) -> dict[str, str | bool]:
  """The sweep's `#SBATCH` options: array, logs, requeue, the job shape, then the
  sweep's own (`Sweep.slurm`), which win; an empty value drops an option."""
  options = _base_options(f"cnnjax-{plan.name}", os.path.join(workdir, SLURM_LOG_DIR),
                          "%A_%a")
  options["array"] = f"0-{num_tasks - 1}"
  options.update(shape.sbatch_options(devices_per_run))
  options.update({key: str(value) for key, value in plan.sweep.slurm.items()})
  return _kept(options)


def check_shape(plan: SweepPlan, shape: JobShape) -> None:
  """Raises `ConfigError` (one line) for a shape SLURM cannot allocate, or a
  multi-process shape with `vmap_seeds` (its seeds share one process's devices)."""
  shape.check()
  if shape.num_processes > 1 and plan.sweep.vmap_seeds:
    raise ConfigError("vmap_seeds trains every seed of a setting in one process: use "
                      "--nodes=1 --tasks_per_node=1, or set vmap_seeds=False to spread "
                      "each run over several processes.")


def write_slurm_job(plan: SweepPlan, workdir: str, units: Sequence[LaunchUnit],
                    manifest: Manifest, *, devices_per_run: int | None = None,
                    shape: JobShape = JobShape(), extra_options: Mapping[str, str] = {},
                    python: str | None = None) -> str:
  """Writes the sweep's job for `units` (the unfinished ones); returns what to run next.

  Raises:
    ConfigError: a multi-process shape with `vmap_seeds` (its seeds share one
      process's devices).
  """
  check_shape(plan, shape)
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
  options = _kept({**sbatch_options(plan, workdir, len(units), devices_per_run, shape),
                   **extra_options})
  with open(script_path, "w") as file:
    file.write(render_script(options, _array_arguments(commands_path), python,
                             written_by="python run.py sweep --launcher=slurm"))
  os.chmod(script_path, 0o755)
  finished = len(plan.runs) - sum(len(unit.runs) for unit in units)
  return (f"Wrote {script_path}: an array job of {len(units)} tasks for "
          f"{sum(len(unit.runs) for unit in units)} runs ({finished} already finished), "
          f"{shape.num_processes} process(es) each, and {commands_path}.\nSubmit it with:\n"
          f"  sbatch {script_path}\nThen: python run.py report --workdir={workdir}")


def write_run_job(workdir: str, run_argv: Sequence[str], shape: JobShape, *,
                  job_name: str, extra_options: Mapping[str, str] = {},
                  python: str | None = None, cwd: str = REPO_ROOT) -> str:
  """Writes `workdir/slurm/run.slurm`, which trains one run over `shape`'s processes;
  returns what to run next.

  Args:
    workdir: the run's work directory (absolute).
    run_argv: the training command's arguments after the Python executable.
    shape: nodes, tasks per node, GPUs per task.
    job_name: SLURM's job name.
    extra_options: more `#SBATCH` options (they win; "" drops one).
    python: the interpreter the job runs (default: this one; $PYTHON overrides).
    cwd: the directory the job runs the command from.
  """
  shape.check()
  python = python or sys.executable
  log_dir = os.path.join(workdir, SLURM_LOG_DIR)
  os.makedirs(log_dir, exist_ok=True)
  options = _kept({**_base_options(job_name, log_dir, "%j"), **shape.sbatch_options(),
                   **extra_options})
  script_path = os.path.join(log_dir, RUN_SCRIPT_FILE)
  arguments = f"set -- {shlex.join(run_argv)}"
  tmp_path = script_path + ".tmp"
  with open(tmp_path, "w") as file:
    file.write(render_script(options, arguments, python, cwd=cwd,
                             written_by="python run.py --launcher=slurm"))
  os.chmod(tmp_path, 0o755)
  os.replace(tmp_path, script_path)
  return (f"Wrote {script_path}: {shape.num_processes} process(es) on {shape.nodes} "
          f"node(s) ({shape.tasks_per_node} per node). Submit it with:\n"
          f"  sbatch {script_path}\nLogs: {log_dir}/<job id>.out and .err; a requeued "
          "job resumes from the newest checkpoint.")
