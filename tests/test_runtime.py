"""The experiment runtime: checkpoints, exact resume, preemption, faults, sampling."""

import json
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from cnnjax.errors import NonFiniteError, WorkdirError
from cnnjax.io.workdir import load_run_config
from cnnjax.runs.registry import train_and_evaluate
from cnnjax.train import loop
from cnnjax.train.checkpointing import Checkpointer
from cnnjax.runs.opening import open_run
from conftest import REPO_ROOT, load_config

LOSSES = ("d_loss", "g_loss", "d_real", "d_fake", "g_grad_norm", "d_grad_norm")


def tiny_config(data_dir: str, **train_overrides):
  config = load_config("dcgan.py", "tiny")
  config.data.data_dir = data_dir
  for name, value in train_overrides.items():
    section, field = name.split("__")
    config[section][field] = value
  return config


def read_metrics(workdir) -> dict[int, dict]:
  lines = pathlib.Path(workdir, "metrics.jsonl").read_text().splitlines()
  return {record["step"]: record for record in map(json.loads, lines)}


def final_state(workdir):
  run = open_run(str(workdir))
  state, step = run.state, run.step
  return jax.device_get(state), step


def assert_bit_identical(tree_a, tree_b):
  equal = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)),
                       tree_a, tree_b)
  assert all(jax.tree.leaves(equal))


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, data_dir):
  """20 steps in one go (checkpoints at 10 and 20)."""
  workdir = tmp_path_factory.mktemp("straight")
  train_and_evaluate(tiny_config(data_dir), str(workdir))
  return workdir


def test_resume_is_bit_exact(straight_run, tmp_path, data_dir):
  train_and_evaluate(tiny_config(data_dir, train__num_steps=10), str(tmp_path))
  train_and_evaluate(tiny_config(data_dir), str(tmp_path))
  (state_a, step_a), (state_b, step_b) = final_state(straight_run), final_state(tmp_path)
  assert step_a == step_b == 20
  assert_bit_identical(state_a, state_b)
  metrics_a, metrics_b = read_metrics(straight_run), read_metrics(tmp_path)
  assert sorted(metrics_a) == sorted(metrics_b) == [5, 10, 15, 20]
  for step in (15, 20):
    for name in LOSSES:
      assert metrics_a[step][name] == metrics_b[step][name]
  # The harmless change (num_steps 10 -> 20) is recorded.
  changes = pathlib.Path(tmp_path, "config_changes.jsonl").read_text()
  assert json.loads(changes) == {"train.num_steps": {"previous": 10, "current": 20}}


def test_changed_config_is_refused_on_resume(straight_run, data_dir):
  before = (straight_run / "config.json").read_bytes()
  config = tiny_config(data_dir)
  config.optim.g_lr = 1e-3
  config.seed = 7
  with pytest.raises(WorkdirError, match=r"optim.g_lr .* seed 0 -> 7"):
    train_and_evaluate(config, str(straight_run))
  assert (straight_run / "config.json").read_bytes() == before


def test_truncated_checkpoint_falls_back_to_the_previous(straight_run, tmp_path, data_dir):
  workdir = tmp_path / "run"
  (workdir).mkdir()
  for name in ("config.json", "data_info.json", "metrics.jsonl"):
    (workdir / name).write_bytes((straight_run / name).read_bytes())
  checkpoints = workdir / "checkpoints"
  subprocess.run(["cp", "-r", str(straight_run / "checkpoints"), str(checkpoints)],
                 check=True)
  for path in (checkpoints / "20").rglob("*"):
    if path.is_file() and path.stat().st_size > 64:
      path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  step = open_run(str(workdir)).step  # Read-only: falls back, moves nothing.
  assert step == 10 and (checkpoints / "20").exists()
  train_and_evaluate(tiny_config(data_dir), str(workdir))
  assert (workdir / "checkpoints_corrupt" / "20").is_dir()
  state, step = final_state(workdir)
  assert step == 20
  # Resumed from 10 with the data position restored: the same as the straight run.
  assert_bit_identical(state, final_state(straight_run)[0])


class _PoisonBatch:
  """A grain map that turns the images of the `at`-th batch into NaN."""

  def __init__(self, at: int):
    self._at, self._count = at, 0

  def __call__(self, batch):
    self._count += 1
    if self._count == self._at:
      return {**batch, "image": np.full_like(batch["image"], np.nan)}
    return batch


def _poisoned_dataset(monkeypatch, at: int):
  make = loop.make_train_dataset
  monkeypatch.setattr(loop, "make_train_dataset",
                      lambda *args, **kwargs: make(*args, **kwargs).map(_PoisonBatch(at)))


def test_nan_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(
    monkeypatch, tmp_path, data_dir):
  _poisoned_dataset(monkeypatch, at=13)
  with pytest.raises(NonFiniteError, match=r"d_loss.* not finite at step 13"):
    train_and_evaluate(tiny_config(data_dir), str(tmp_path))
  checkpointer = Checkpointer(str(tmp_path), load_run_config(str(tmp_path))[0].checkpoint,
                              read_only=True)
  assert checkpointer.all_steps() == [10]
  state, step = final_state(tmp_path)
  assert step == 10
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state)
             if np.issubdtype(np.asarray(leaf).dtype, np.floating))


def test_skip_mode_skips_and_counts_nonfinite_steps(monkeypatch, tmp_path, data_dir):
  _poisoned_dataset(monkeypatch, at=13)
  metrics = train_and_evaluate(
      tiny_config(data_dir, train__on_nonfinite="skip"), str(tmp_path))
  assert metrics["nonfinite_steps"] == 1.0
  assert np.isfinite(metrics["d_loss"])
  state, step = final_state(tmp_path)
  assert step == 20 and int(state.divergence.first_step) == 13


# --- Subprocesses: signals and `run.py sample`. -----------------------------------------

def _command(workdir, data_dir, *extra):
  return [sys.executable, "run.py", "--config=configs/dcgan.py:tiny",
          f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
          "--config.train.num_steps=400", "--config.checkpoint.every=25",
          "--config.train.log_every=25", "--config.train.sample_every=1000", *extra]


def _wait_for_checkpoint(process, workdir, timeout=300.0):
  deadline = time.time() + timeout
  checkpoints = pathlib.Path(workdir, "checkpoints")
  while time.time() < deadline:
    if checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir()):
      return
    if process.poll() is not None:
      pytest.fail(f"run ended early: {process.stderr.read()[-2000:]}")
    time.sleep(0.05)
  pytest.fail("no checkpoint appeared")


def _steps(workdir) -> list[int]:
  return sorted(int(p.name) for p in pathlib.Path(workdir, "checkpoints").iterdir()
                if p.name.isdigit())


def test_sigkill_mid_run_then_resume_to_the_end(tmp_path, data_dir):
  process = subprocess.Popen(_command(tmp_path, data_dir), cwd=REPO_ROOT,
                             stderr=subprocess.PIPE, text=True)
  _wait_for_checkpoint(process, tmp_path)
  process.kill()
  process.wait()
  result = subprocess.run(_command(tmp_path, data_dir), cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert _steps(tmp_path)[-1] == 400
  records = read_metrics(tmp_path)
  assert sorted(records) == list(range(25, 401, 25))


def test_sigterm_saves_the_current_step_and_exits_zero(tmp_path, data_dir):
  process = subprocess.Popen(_command(tmp_path, data_dir), cwd=REPO_ROOT,
                             stderr=subprocess.PIPE, text=True)
  _wait_for_checkpoint(process, tmp_path)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=60)
  assert process.returncode == 0, stderr[-3000:]
  assert "Stopped at step" in stderr
  stopped_at = _steps(tmp_path)[-1]
  result = subprocess.run(_command(tmp_path, data_dir), cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  if stopped_at < 400:
    assert f"steps {stopped_at} to 400" in result.stderr


def test_sample_command_on_a_finished_run(straight_run, tmp_path):
  def sample(*args):
    return subprocess.run([sys.executable, "run.py", "sample",
                           f"--workdir={straight_run}", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
  first, second = tmp_path / "a.png", tmp_path / "b.png"
  assert sample("--num=9", "--seed=3", f"--out={first}").returncode == 0
  assert sample("--num=9", "--seed=3", "--step=10", f"--out={second}").returncode == 0
  from PIL import Image
  with Image.open(first) as image:
    assert image.size == (3 * 30 + 2, 3 * 30 + 2)
  assert first.read_bytes() != second.read_bytes()  # Steps 20 and 10 differ.
  bad = sample("--num=9", "--step=11", f"--out={tmp_path / 'c.png'}")
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1].startswith("error: No checkpoint at step 11")
  assert not (tmp_path / "c.png").exists()
