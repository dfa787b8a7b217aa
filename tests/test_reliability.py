"""Runtime guarantees under contention and full disks: one writer per work directory
(an OS lock released when its holder dies), reads beside a live run, and a disk that
fills mid-run (one-line error, restorable checkpoint, no torn metrics line, exact
resume once space is freed)."""

import errno
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
import uuid

import jax
import numpy as np
import pytest

from cnnjax.errors import ConfigError, WorkdirError
from cnnjax.io.event_file import read_scalars
from cnnjax.io.metrics_writer import MetricsWriter
from cnnjax.io.workdir_lock import LOCK_FILE, workdir_lock
from cnnjax.runs.opening import open_run
from cnnjax.train.best_metric import LOOP_METRICS, check_best_metric, check_evaluated
from conftest import REPO_ROOT, load_config


def _command(workdir, data_dir, *extra):
  return [sys.executable, "run.py", "--config=configs/dcgan.py:tiny",
          f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
          "--config.checkpoint.every=10", "--config.train.log_every=10",
          "--config.train.sample_every=10", *extra]


def _steps(workdir) -> list[int]:
  directory = pathlib.Path(workdir, "checkpoints")
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _wait_for(predicate, process, what, timeout=300.0):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return
    if process.poll() is not None:
      pytest.fail(f"run ended before {what}: {process.stderr.read()[-2000:]}")
    time.sleep(0.05)
  pytest.fail(f"timed out waiting for {what}")


def _one_line_error(result) -> str:
  lines = result.stderr.strip().splitlines()
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  assert lines and lines[-1].startswith("error: "), result.stderr[-3000:]
  return lines[-1]


def _final_state(workdir):
  run = open_run(str(workdir))
  return jax.device_get(run.state), run.step


def _assert_bit_identical(tree_a, tree_b):
  equal = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)),
                       tree_a, tree_b)
  assert all(jax.tree.leaves(equal))


_HOLDER = """
import sys, time
from cnnjax.io.workdir_lock import workdir_lock
with workdir_lock(sys.argv[1]):
  print("held", flush=True)
  time.sleep(600)
"""


def test_lock_is_released_by_the_os_when_its_holder_is_killed(tmp_path):
  holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(WorkdirError, match=f"in use by process {holder.pid} on "):
      with workdir_lock(str(tmp_path)):
        pass
  finally:
    holder.kill()
    holder.wait()
  with workdir_lock(str(tmp_path)):   # SIGKILL left no stale lock.
    with workdir_lock(str(tmp_path)):   # Reentrant within a process.
      pass
  with workdir_lock(str(tmp_path)):   # Released by the outermost holder.
    pass
  assert (tmp_path / LOCK_FILE).read_text() == ""


def test_second_writer_refused_readers_served_relaunch_after_sigkill(tmp_path, data_dir,
                                                                     tiny_classifier_run):
  live = subprocess.Popen(_command(tmp_path, data_dir, "--config.train.num_steps=100000"),
                          cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
  try:
    _wait_for(lambda: _steps(tmp_path), live, "a checkpoint")
    second = subprocess.run(_command(tmp_path, data_dir), cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 2
    assert f"is in use by process {live.pid} on " in _one_line_error(second)
    assert "run.py" in _one_line_error(second)
    # Readers take no lock.
    sample = subprocess.run(
        [sys.executable, "run.py", "sample", f"--workdir={tmp_path}",
         f"--out={tmp_path.parent / (tmp_path.name + '_samples.png')}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert sample.returncode == 0, sample.stderr[-3000:]
    evaluate = subprocess.run(
        [sys.executable, "run.py", "evaluate", f"--workdir={tmp_path}", "--num_samples=64",
         f"--extractor_workdir={tiny_classifier_run}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    assert json.loads((tmp_path / "eval.json").read_text())["step"] in _steps(tmp_path)
  finally:
    live.kill()
    live.wait()
  last = _steps(tmp_path)[-1]
  # The relaunch gets the lock; num_steps = the last checkpoint: restores, trains nothing.
  relaunch = subprocess.run(
      _command(tmp_path, data_dir, f"--config.train.num_steps={last}"), cwd=REPO_ROOT,
      capture_output=True, text=True, timeout=300)
  assert relaunch.returncode == 0, relaunch.stderr[-3000:]
  assert f"Resumed from the checkpoint at step {last}" in relaunch.stderr


def test_torn_metrics_tail_is_dropped_on_resume(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 10, "a": 1.0}\n{"step": 20, "a": 2.0}\n{"step": 30, "a"')
  writer = MetricsWriter(str(tmp_path), resume_step=20)
  writer.write_scalars(30, {"a": 3.0})
  writer.close()
  assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [10, 20, 30]


def test_tensorboard_events_are_synchronous_whole_records_and_purged_on_resume(
    tmp_path, monkeypatch):
  first = MetricsWriter(str(tmp_path))
  for step in (10, 20, 30):
    first.write_scalars(step, {"loss": step / 10})
  first.write_image(30, "samples", np.zeros((4, 4, 3), np.uint8))
  first.close()
  resumed = MetricsWriter(str(tmp_path), resume_step=20)   # Step 30 is redone.
  resumed.write_scalars(30, {"loss": 9.0})
  event_files = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  sizes = {path: path.stat().st_size for path in event_files}

  def full_disk(fd, data):
    raise OSError(errno.ENOSPC, "No space left on device")
  real_write = os.write
  monkeypatch.setattr(os, "write", lambda fd, data: full_disk(fd, data)
                      if any(os.path.samefile(f"/proc/self/fd/{fd}", path)
                             for path in event_files) else real_write(fd, data))
  with pytest.raises(WorkdirError, match="^Disk full writing the TensorBoard scalars of "
                     "step 40: free space"):
    resumed.write_scalars(40, {"loss": 4.0})
  monkeypatch.undo()
  resumed.close()
  assert {path: path.stat().st_size for path in event_files} == sizes   # No torn record.
  assert read_scalars(str(tmp_path / "tensorboard")) == {"loss": {10: 1.0, 20: 2.0,
                                                                  30: 9.0}}
  assert len(event_files) == 2


@pytest.fixture
def small_tmpfs(tmp_path):
  """A 6 MiB tmpfs (root only; elsewhere the test is skipped saying why)."""
  mount_point = tmp_path / "tmpfs"
  mount_point.mkdir()
  result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs",
                           str(mount_point)], capture_output=True, text=True)
  if result.returncode != 0:
    pytest.skip(f"cannot mount a size-limited tmpfs here (not root?): "
                f"{result.stderr.strip()}")
  yield mount_point
  subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _new_filler(directory: pathlib.Path) -> pathlib.Path:
  """Creates the (empty) filler before the run starts: once the run itself has filled the
  tmpfs, even creating a file fails with ENOSPC."""
  filler = directory / f"filler-{uuid.uuid4().hex}"
  filler.touch()
  return filler


def _fill(filler: pathlib.Path) -> pathlib.Path:
  # Unbuffered: a buffered file would raise ENOSPC again when closing flushed its rest.
  with open(filler, "ab", buffering=0) as file:
    try:
      while True:
        file.write(b"\0" * 65536)
    except OSError:
      pass
  return filler


def test_full_disk_stops_cleanly_and_resumes_exactly(small_tmpfs, tiny_gan_run, data_dir):
  """configs/dcgan.py:tiny (as the session's tiny_gan_run, but checkpointing every 5
  steps, which changes no result) on a tmpfs that is filled after the first checkpoint."""
  workdir = small_tmpfs / "run"
  command = [sys.executable, "run.py", "--config=configs/dcgan.py:tiny",
             f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
             "--config.checkpoint.every=5"]
  filler = _new_filler(small_tmpfs)
  process = subprocess.Popen(command, cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
  _wait_for(lambda: _steps(workdir), process, "a checkpoint")
  _fill(filler)
  _, stderr = process.communicate(timeout=300)
  lines = stderr.strip().splitlines()
  assert process.returncode == 2, stderr[-3000:]
  # The run ends on one one-line error (an uncaught exception would print its own last
  # line); orbax's asyncio tasks may log their failures after it, at interpreter exit.
  errors = [line for line in lines if line.startswith("error: ")]
  assert len(errors) == 1 and errors[0].startswith("error: Disk full writing "), lines[-5:]
  assert errors[0].endswith("free space and relaunch (the run resumes from its newest "
                            "complete checkpoint).")
  for line in (workdir / "metrics.jsonl").read_text().splitlines(keepends=True):
    assert line.endswith("\n") and json.loads(line)["step"] % 5 == 0
  read_scalars(str(workdir / "tensorboard"))   # Whole records only (it checks the CRCs).
  _, restorable_step = _final_state(workdir)
  assert restorable_step == _steps(workdir)[-1] < 20

  filler.unlink()
  resumed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                           timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"Resumed from the checkpoint at step {restorable_step}" in resumed.stderr
  state, step = _final_state(workdir)
  expected, expected_step = _final_state(tiny_gan_run)
  assert step == expected_step == 20
  _assert_bit_identical(state, expected)
  metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  expected_metrics = [json.loads(line) for line in
                      (tiny_gan_run / "metrics.jsonl").read_text().splitlines()]
  assert [m["step"] for m in metrics] == [m["step"] for m in expected_metrics]
  for got, want in zip(metrics, expected_metrics):
    assert got["d_loss"] == want["d_loss"] and got["g_loss"] == want["g_loss"]
  curves = read_scalars(str(workdir / "tensorboard"))["d_loss"]
  assert curves == {m["step"]: np.float32(m["d_loss"]) for m in expected_metrics}


def test_best_metric_from_an_evaluation_is_checked_at_the_first():
  """The runtime's two checks of `checkpoint.best_metric` (tests/test_evaluation.py
  trains with best_metric=fid through both; the catalogue's typo ends at the first)."""
  config = load_config("dcgan.py", "tiny")
  step_names = {"d_loss", "g_loss", *LOOP_METRICS}
  config.checkpoint.best_metric = "fdi"
  with pytest.raises(ConfigError, match=r"best_metric='fdi' is not a metric this run "
                     r"logs; it logs d_loss, g_loss, nonfinite_steps"):
    check_best_metric(config, step_names, evaluates=False)
  check_best_metric(config, step_names, evaluates=True)   # Known at the first evaluation.
  with pytest.raises(ConfigError, match=r"its evaluation fid, kid_mean; the checkpoints "
                     r"saved so far are kept\.$"):
    check_evaluated(config, step_names, {"fid": 1.0, "kid_mean": 0.1})
  for name in ("fid", "g_loss", "wall_time"):
    config.checkpoint.best_metric = name
    check_best_metric(config, step_names, evaluates=name == "fid")
    check_evaluated(config, step_names, {"fid": 1.0})
