"""Fault injection: random SIGKILL / SIGTERM over a run's life, and damaged work
directories, each checked bit-for-bit against an uninterrupted run.

  python experiments/fault_injection.py --trials=20 --seed=0 --workdir_root=/tmp/faults

Each trial launches `run.py` with configs/dcgan.py:tiny (checkpoints every 5 steps) and
sends SIGKILL or SIGTERM (drawn at random) in one of three target phases, taken in turn:
start-up (a random moment of a warm run's start-up time), training steps (a random
moment of its training time, once training has logged) and checkpoint write (the first
moment an orbax temporary directory appears, polled every millisecond). It reports the
phase the signal actually landed in, read again just after sending it (start-up: the run
has not logged "Training ..." yet; checkpoint write: an orbax temporary directory
exists; else training steps), relaunches the same command until it exits 0, and compares the
final checkpoint (every parameter, optimizer and BatchNorm array) and the logged losses
with the uninterrupted run's. Then four damaged directories (copies of a half-trained
run): the newest checkpoint's largest file truncated, a file of it deleted, a garbage
config.json (must be refused with a one-line error, exit 2, nothing changed), a torn
last line of metrics.jsonl; each relaunched to the end and compared the same way.
Prints one table. Not a unit test: it takes minutes.
"""

import collections
import hashlib
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

from absl import app, flags

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
TRIALS = flags.DEFINE_integer("trials", 20, "Random kills.")
SEED = flags.DEFINE_integer("seed", 0, "Seed of the kills' signals and moments.")
WORKDIR_ROOT = flags.DEFINE_string("workdir_root", None, "Where the runs go (created).")
NUM_STEPS = flags.DEFINE_integer("num_steps", 40, "Steps of each run.")
MAX_RELAUNCHES = 5


def _command(workdir, data_dir, num_steps):
  return [sys.executable, "run.py", "--config=configs/dcgan.py:tiny",
          f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
          f"--config.train.num_steps={num_steps}", "--config.checkpoint.every=5",
          "--config.train.log_every=5", "--config.train.sample_every=10"]


def _run(command, log_path):
  with open(log_path, "a") as log:
    return subprocess.run(command, cwd=REPO_ROOT, stderr=log, stdout=log).returncode


def _phase(workdir: pathlib.Path, log_path: pathlib.Path) -> str:
  """Where a run is now: start-up, checkpoint write or training steps."""
  log = log_path.read_text() if log_path.exists() else ""
  if "Training gan on" not in log.split("=== attempt")[-1]:
    return "start-up"
  checkpoints = workdir / "checkpoints"
  if checkpoints.is_dir() and any("tmp" in p.name for p in checkpoints.iterdir()):
    return "checkpoint write"
  return "training steps"


TARGETS = ("start-up", "training steps", "checkpoint write")


def _warm_timings(command, workdir: pathlib.Path, log_path: pathlib.Path) -> dict:
  """Seconds a warm run (data prepared, programs cached) spends starting and in total."""
  shutil.rmtree(workdir, ignore_errors=True)
  with open(log_path, "w") as log:
    started = time.time()
    process = subprocess.Popen(command, cwd=REPO_ROOT, stderr=log, stdout=log)
    start_up = None
    while process.poll() is None:
      if start_up is None and _phase(workdir, log_path) != "start-up":
        start_up = time.time() - started
      time.sleep(0.01)
  total = time.time() - started
  shutil.rmtree(workdir, ignore_errors=True)
  return {"total": total, "start-up": start_up or total, "training": total - (start_up or 0)}


def _signal_in_phase(process, target: str, fraction: float, signum, workdir, log_path,
                     timings: dict) -> tuple[str, float]:
  """Sends `signum` at a random moment of the `target` phase; returns the phase the
  signal landed in (read again just after sending it) and the seconds since launch.

  start-up: `fraction` of the warm start-up time; training steps: once training has
  logged, `fraction` of the warm training time; checkpoint write: at the first moment
  an orbax temporary directory is seen (polled every millisecond).
  """
  started = time.time()
  deadline = started + 10 * timings["total"] + 60
  wait_for = {"start-up": lambda: time.time() - started >= fraction * timings["start-up"],
              "training steps": None, "checkpoint write": None}[target]
  trained_at = None
  while process.poll() is None and time.time() < deadline:
    phase = _phase(workdir, log_path)
    if target == "training steps" and phase != "start-up" and trained_at is None:
      trained_at = time.time()
      wait_for = lambda: time.time() - trained_at >= fraction * timings["training"]
    if target == "checkpoint write" and phase == "checkpoint write":
      wait_for = lambda: True
    if wait_for is not None and wait_for():
      process.send_signal(signum)
      landed = _phase(workdir, log_path)
      process.wait()
      return landed, time.time() - started
    time.sleep(0.001)
  process.wait()
  return "finished before the signal", time.time() - started


def _relaunch_until_done(command, log_path) -> tuple[bool, int]:
  for attempt in range(MAX_RELAUNCHES):
    with open(log_path, "a") as log:
      log.write("\n=== attempt relaunch\n")
    if _run(command, log_path) == 0:
      return True, attempt + 1
  return False, MAX_RELAUNCHES


def _final(workdir):
  import jax
  from cnnjax.runs.opening import open_run
  run = open_run(str(workdir))
  losses = [(r["step"], r["d_loss"], r["g_loss"]) for r in map(
      json.loads, (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines())]
  return jax.device_get(run.state), run.step, losses


def _identical(workdir, reference) -> bool:
  import jax
  import numpy as np
  state, step, losses = _final(workdir)
  ref_state, ref_step, ref_losses = reference
  same = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)),
                      state, ref_state)
  return step == ref_step and losses == ref_losses and all(jax.tree.leaves(same))


def _tree_hash(directory: pathlib.Path) -> str:
  digest = hashlib.sha256()
  for path in sorted(p for p in directory.rglob("*") if p.is_file()):
    digest.update(str(path.relative_to(directory)).encode())
    digest.update(path.read_bytes())
  return digest.hexdigest()


def _newest_checkpoint(workdir: pathlib.Path) -> pathlib.Path:
  steps = sorted((int(p.name), p) for p in (workdir / "checkpoints").iterdir()
                 if p.name.isdigit())
  return steps[-1][1]


def _damage(kind: str, workdir: pathlib.Path) -> None:
  if kind in ("truncated checkpoint file", "deleted checkpoint file"):
    files = sorted((p for p in _newest_checkpoint(workdir).rglob("*") if p.is_file()),
                   key=lambda p: p.stat().st_size)
    target = files[-1]
    if kind.startswith("truncated"):
      os.truncate(target, target.stat().st_size // 2)
    else:
      target.unlink()
  elif kind == "garbage config.json":
    (workdir / "config.json").write_text("{not json")
  elif kind == "torn metrics.jsonl":
    with open(workdir / "metrics.jsonl", "a") as file:
      file.write('{"step": 999, "d_lo')


def main(argv):
  del argv
  if not WORKDIR_ROOT.value:
    raise app.UsageError("--workdir_root is required.")
  root = pathlib.Path(WORKDIR_ROOT.value).resolve()
  root.mkdir(parents=True, exist_ok=True)
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(root / "jax_cache"))
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  data_dir = root / "tfds"
  num_steps = NUM_STEPS.value
  rng = random.Random(SEED.value)

  reference_dir = root / "reference"
  shutil.rmtree(reference_dir, ignore_errors=True)
  started = time.time()
  if _run(_command(reference_dir, data_dir, num_steps), root / "reference.log") != 0:
    raise SystemExit(f"The reference run failed; see {root / 'reference.log'}.")
  reference = _final(reference_dir)
  timings = _warm_timings(_command(root / "timing", data_dir, num_steps), root / "timing",
                          root / "timing.log")
  reference_seconds = timings["total"]

  rows = []
  for trial in range(TRIALS.value):
    workdir, log_path = root / f"trial_{trial:02d}", root / f"trial_{trial:02d}.log"
    shutil.rmtree(workdir, ignore_errors=True)
    log_path.unlink(missing_ok=True)
    signum = rng.choice([signal.SIGKILL, signal.SIGTERM])
    target = TARGETS[trial % len(TARGETS)]
    delay = rng.uniform(0.0, 1.0)
    command = _command(workdir, data_dir, num_steps)
    with open(log_path, "a") as log:
      log.write("=== attempt 1\n")
      log.flush()
      process = subprocess.Popen(command, cwd=REPO_ROOT, stderr=log, stdout=log)
      phase, seconds = _signal_in_phase(process, target, delay, signum, workdir, log_path,
                                        timings)
    first_status = process.returncode
    if first_status == 0 and _done(workdir, num_steps):
      recovered, relaunches = True, 0
    else:
      recovered, relaunches = _relaunch_until_done(command, log_path)
    rows.append(dict(case=f"{signal.Signals(signum).name} {target} {seconds:.1f}s",
                     phase=phase, status=first_status, relaunches=relaunches,
                     recovered=recovered,
                     identical=recovered and _identical(workdir, reference)))

  half_dir = root / "half"
  shutil.rmtree(half_dir, ignore_errors=True)
  _run(_command(half_dir, data_dir, num_steps // 2), root / "half.log")
  for kind in ("truncated checkpoint file", "deleted checkpoint file",
               "garbage config.json", "torn metrics.jsonl"):
    workdir = root / kind.replace(" ", "_").replace(".", "_")
    log_path = workdir.with_suffix(".log")
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.copytree(half_dir, workdir)
    _damage(kind, workdir)
    command = _command(workdir, data_dir, num_steps)
    if kind == "garbage config.json":
      before = _tree_hash(workdir)
      result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
      lines = result.stderr.strip().splitlines()
      refused = (result.returncode == 2 and lines[-1].startswith("error: ")
                 and _tree_hash(workdir) == before)
      rows.append(dict(case=kind, phase="damaged workdir", status=result.returncode,
                       relaunches=1, recovered=refused, identical="n/a (refused: "
                       + (lines[-1][:60] if lines else "") + ")"))
      continue
    recovered, relaunches = _relaunch_until_done(command, log_path)
    rows.append(dict(case=kind, phase="damaged workdir", status="-",
                     relaunches=relaunches, recovered=recovered,
                     identical=recovered and _identical(workdir, reference)))
  _print_table(rows, reference_seconds, num_steps)


def _done(workdir: pathlib.Path, num_steps: int) -> bool:
  checkpoints = workdir / "checkpoints"
  return checkpoints.is_dir() and (checkpoints / str(num_steps)).is_dir()


def _print_table(rows, reference_seconds, num_steps) -> None:
  lines = [f"Reference: configs/dcgan.py:tiny, {num_steps} steps, "
           f"{reference_seconds:.1f} s uninterrupted.", "",
           f"{'case':<34} {'phase':<28} {'exit':>5} {'relaunches':>10} "
           f"{'recovered':>9}  bit-identical"]
  for row in rows:
    lines.append(f"{row['case']:<34} {row['phase']:<28} {str(row['status']):>5} "
                 f"{row['relaunches']:>10} {str(row['recovered']):>9}  {row['identical']}")
  kills = [row for row in rows if row["phase"] != "damaged workdir"]
  by_phase = collections.Counter(row["phase"] for row in kills)
  lines += ["", f"Kills: {len(kills)} ("
            + ", ".join(f"{phase}: {count}" for phase, count in sorted(by_phase.items()))
            + f"); recovered {sum(bool(r['recovered']) for r in kills)}/{len(kills)}; "
            f"bit-identical {sum(r['identical'] is True for r in kills)}/{len(kills)}."]
  damaged = [row for row in rows if row["phase"] == "damaged workdir"]
  lines.append(f"Damaged workdirs: {len(damaged)}; handled "
               f"{sum(bool(r['recovered']) for r in damaged)}/{len(damaged)}.")
  print("\n".join(lines))   # The script's result: a table on stdout.


if __name__ == "__main__":
  app.run(main)
