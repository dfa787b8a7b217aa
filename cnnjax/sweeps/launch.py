"""`run.py sweep`: a sweep's runs as subprocesses over the local devices, or a SLURM job.

The local launcher splits the devices into groups of `--devices_per_run` and runs one
launch unit per group at a time, queued until all are done. A unit is one run
(`python run.py --config=... --config.FIELD=VALUE ... --workdir=DIR/<run>`) or, with
`vmap_seeds`, every seed of one setting (`python -m cnnjax.sweeps.vmap_seeds ...`).
Devices are chosen by environment variables: `CUDA_VISIBLE_DEVICES` for GPUs and, on
CPU, `--xla_force_host_platform_device_count` in `XLA_FLAGS` (the group's size of fake
devices); TPUs run one unit at a time on every chip.

`DIR/sweep.json` lists every run: name, overrides, command, status (pending, running,
finished, failed, interrupted), error. Launching again skips finished runs (their
final checkpoint and metrics reach `train.num_steps`), resumes interrupted ones (the
same command resumes from the newest checkpoint) and retries failed ones. A failed run
is recorded with the last line of its stderr and does not stop the others.
"""

import collections
import dataclasses
import os
import signal
import subprocess
import sys
import time

from absl import logging

from cnnjax.errors import ConfigError
from cnnjax.io.workdir import prepare_workdir
from cnnjax.io.workdir_lock import workdir_lock
from cnnjax.runs.registry import kind_of
from cnnjax.sweeps.devices import (Devices, detect_devices, device_groups,
                                    group_environment)
from cnnjax.io.provenance import command_line, write_provenance
from cnnjax.sweeps.manifest import (LOG_DIR, LaunchUnit, Manifest, is_finished,
                                     launch_units, now, run_workdir)
from cnnjax.sweeps.slurm import JobShape, check_shape, write_slurm_job
from cnnjax.sweeps.spec import REPO_ROOT, SweepPlan, load_plan

_POLL_SECONDS = 0.25


def _die_with_parent() -> None:
  """In the child: SIGTERM it (checkpoint and stop) if the launcher dies (Linux)."""
  try:
    import ctypes
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass


def _last_line(path: str, offset: int) -> str:
  """The last non-empty line written to `path` after `offset`."""
  try:
    with open(path, errors="replace") as file:
      file.seek(offset)
      lines = [line.strip() for line in file.read().splitlines() if line.strip()]
  except OSError:
    return ""
  return lines[-1] if lines else ""


@dataclasses.dataclass
class _Running:
  unit: LaunchUnit
  process: subprocess.Popen
  group: tuple[int, ...]
  stderr_path: str
  stderr_offset: int
  started: float


class LocalLauncher:
  """Runs launch units over device groups, one unit per group at a time."""

  def __init__(self, workdir: str, devices: Devices, groups: list[tuple[int, ...]],
               manifest: Manifest):
    self._workdir = workdir
    self._devices = devices
    self._groups = groups
    self._manifest = manifest
    self._stopping = False

  def _start(self, unit: LaunchUnit, group: tuple[int, ...]) -> _Running:
    env = group_environment(self._devices, group, dict(os.environ))
    log_dir = os.path.join(self._workdir, LOG_DIR)
    os.makedirs(log_dir, exist_ok=True)
    stdout_path = os.path.join(log_dir, f"{unit.name}.stdout.log")
    stderr_path = os.path.join(log_dir, f"{unit.name}.stderr.log")
    offset = os.path.getsize(stderr_path) if os.path.exists(stderr_path) else 0
    command = command_line(unit.argv, env, python=os.path.basename(sys.executable))
    device_info = {"backend": self._devices.platform, "device_count": len(group),
                   "devices": [{"id": device, "platform": self._devices.platform,
                                "kind": self._devices.kinds[self._devices.ids.index(device)]}
                               for device in group]}
    for run in unit.runs:
      run_dir = prepare_workdir(run_workdir(self._workdir, run))
      write_provenance(run_dir, {"seed": run.seed}, unit.argv, env=env,
                       devices=device_info, written_by="sweep")
      entry = self._manifest.runs[run.name]
      self._manifest.update(run, status="running", error=None, command=command,
                            devices=list(group), started=now(),
                            attempts=entry.get("attempts", 0) + 1)
    self._manifest.write()
    logging.info("Starting %s on %s devices %s.", unit.name, self._devices.platform,
                 list(group))
    with open(stdout_path, "a") as stdout, open(stderr_path, "a") as stderr:
      process = subprocess.Popen([sys.executable, *unit.argv], cwd=REPO_ROOT, env=env,
                                 stdout=stdout, stderr=stderr,
                                 preexec_fn=_die_with_parent)
    return _Running(unit=unit, process=process, group=group, stderr_path=stderr_path,
                    stderr_offset=offset, started=time.monotonic())

  def _finish(self, running: _Running) -> None:
    returncode = running.process.returncode
    duration = round(time.monotonic() - running.started, 1)
    error = None
    if returncode != 0:
      error = _last_line(running.stderr_path, running.stderr_offset)
      if returncode < 0:
        error = f"killed by {signal.Signals(-returncode).name}" + (
            f" after: {error}" if error else "")
      error = error or f"exit status {returncode}"
    for run in running.unit.runs:
      finished = is_finished(run_workdir(self._workdir, run), run.num_steps)
      if returncode == 0 and finished:
        status = "finished"
      elif returncode == 0 or self._stopping:
        status = "interrupted"
      else:
        status = "failed"
      self._manifest.update(run, status=status, error=error if status == "failed" else None,
                            returncode=returncode, ended=now(), duration_s=duration)
    self._manifest.write()
    logging.info("%s %s after %.1f s%s", running.unit.name,
                 self._manifest.runs[running.unit.runs[0].name]["status"], duration,
                 f": {error}" if error else ".")

  def _request_stop(self, signum, frame) -> None:
    del frame
    logging.warning("Received %s: stopping the running runs (they checkpoint); rerun "
                    "the same command to resume.", signal.Signals(signum).name)
    self._stopping = True

  def run(self, units: list[LaunchUnit]) -> None:
    """Runs `units` to completion (or until SIGTERM/SIGINT), updating the manifest."""
    queue = collections.deque(units)
    free = list(self._groups)
    running: list[_Running] = []
    previous = {signum: signal.signal(signum, self._request_stop)
                for signum in (signal.SIGTERM, signal.SIGINT)}
    forwarded = False
    try:
      while running or (queue and not self._stopping):
        while queue and free and not self._stopping:
          running.append(self._start(queue.popleft(), free.pop(0)))
        if self._stopping and not forwarded:
          for item in running:
            item.process.send_signal(signal.SIGTERM)
          forwarded = True
        time.sleep(_POLL_SECONDS)
        for item in [item for item in running if item.process.poll() is not None]:
          running.remove(item)
          free.append(item.group)
          self._finish(item)
    finally:
      for signum, handler in previous.items():
        signal.signal(signum, handler)


def _plan_units(plan: SweepPlan, workdir: str, manifest: Manifest
                ) -> tuple[list[LaunchUnit], list[LaunchUnit]]:
  """(units to run, units already finished); finished runs are marked in the manifest."""
  todo, done = [], []
  for unit in launch_units(plan, workdir):
    finished = all(is_finished(run_workdir(workdir, run), run.num_steps)
                   and manifest.runs[run.name]["status"] != "failed" for run in unit.runs)
    if finished:
      for run in unit.runs:
        manifest.update(run, status="finished", error=None)
      done.append(unit)
    else:
      todo.append(unit)
  return todo, done


def _summary(plan: SweepPlan, workdir: str, manifest: Manifest, skipped: set[str]) -> str:
  lines = [f"Sweep {plan.name}: {len(plan.runs)} runs in {workdir}"]
  width = max(len(run.name) for run in plan.runs)
  for run in plan.runs:
    entry = manifest.runs[run.name]
    note = ("already finished, skipped" if run.name in skipped
            else entry.get("error") or "")
    lines.append(f"  {entry['status']:<11} {run.name:<{width}}  {note}".rstrip())
  lines.append(f"Manifest: {manifest.path}")
  lines.append(f"Report: python run.py report --workdir={workdir}")
  return "\n".join(lines)


def run_sweep_command(sweep_path: str, workdir: str, *, launcher: str = "local",
                      devices_per_run: int | None = None,
                      shape: JobShape = JobShape(),
                      slurm_options: dict[str, str] | None = None) -> str | None:
  """`run.py sweep`: validates the sweep, then launches it locally or writes a SLURM job.

  Prints the summary (or the SLURM submission line) on stdout. `shape` (nodes, tasks per
  node, GPUs per task) and `slurm_options` (more `#SBATCH` options) are the SLURM job's;
  the local launcher runs single-process runs and refuses a multi-process shape.

  Returns:
    None when every run finished (or the job was written), else a one-line message
    saying which runs failed or remain (for `error: ...` and exit status 1).

  Raises:
    ConfigError: a bad sweep (unknown field, wrong type, ...), before anything runs.
    WorkdirError: an unwritable work directory.
  """
  plan = load_plan(sweep_path)
  kind_of(plan.base_config)  # An unknown experiment kind fails before anything runs.
  if launcher not in ("local", "slurm"):
    raise ConfigError(f"--launcher={launcher!r}: use local or slurm.")
  check_shape(plan, shape)
  if launcher == "slurm":
    workdir = prepare_workdir(workdir)
    manifest = Manifest(workdir, plan, "slurm", devices_per_run=devices_per_run)
    todo, _ = _plan_units(plan, workdir, manifest)
    print(write_slurm_job(plan, workdir, todo, manifest, devices_per_run=devices_per_run,
                          shape=shape, extra_options=slurm_options or {}))
    return None
  if shape.num_processes > 1 or slurm_options:
    raise ConfigError("--nodes, --tasks_per_node and --slurm shape SLURM jobs: add "
                      "--launcher=slurm (the local launcher runs each run as one process "
                      "over --devices_per_run devices).")
  devices = detect_devices()
  groups = device_groups(devices, devices_per_run)
  workdir = prepare_workdir(workdir)
  with workdir_lock(workdir):   # One launcher per sweep directory.
    manifest = Manifest(workdir, plan, "local", platform=devices.platform,
                        device_groups=[list(group) for group in groups])
    todo, done = _plan_units(plan, workdir, manifest)
    skipped = {run.name for unit in done for run in unit.runs}
    manifest.write()
    logging.info("Sweep %s: %d runs, %d already finished; %d processes to run over %d "
                 "device groups of %s.", plan.name, len(plan.runs), len(skipped),
                 len(todo), len(groups), devices.platform)
    LocalLauncher(workdir, devices, groups, manifest).run(todo)
  print(_summary(plan, workdir, manifest, skipped))
  statuses = collections.Counter(entry["status"] for entry in manifest.runs.values())
  failed = [name for name, entry in manifest.runs.items() if entry["status"] == "failed"]
  if failed:
    return (f"{len(failed)} of {len(plan.runs)} runs failed ({', '.join(failed[:3])}"
            f"{', ...' if len(failed) > 3 else ''}); their errors are in "
            f"{manifest.path}; rerun the same command to retry them.")
  unfinished = len(plan.runs) - statuses["finished"]
  if unfinished:
    return (f"{unfinished} of {len(plan.runs)} runs are not finished; rerun the same "
            "command to resume them.")
  return None
