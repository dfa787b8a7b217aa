"""run.py end to end: a tiny training run writes every output; bad input fails cleanly."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

TINY = "--config=configs/dcgan.py:tiny"


def run_cli(*args: str, data_dir: str) -> subprocess.CompletedProcess:
  """Runs `python run.py ARGS` from the repo root with the session's TFDS data_dir."""
  command = [sys.executable, "run.py", *args]
  if any(arg.startswith("--config=") for arg in args):
    command.append(f"--config.data.data_dir={data_dir}")
  return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                        timeout=600, env=os.environ.copy())


def snapshot(directory: pathlib.Path) -> dict[str, bytes]:
  return {str(path.relative_to(directory)): path.read_bytes()
          for path in sorted(directory.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_dir):
  workdir = tmp_path_factory.mktemp("tiny_run")
  result = run_cli(TINY, f"--workdir={workdir}", data_dir=data_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, result


def test_tiny_run_writes_every_output(tiny_run):
  workdir, result = tiny_run
  config = json.loads((workdir / "config.json").read_text())
  assert config["train"]["num_steps"] == 20
  assert config["data"]["name"] == "digits"
  # Grids every sample_every=10 steps and at the end.
  assert (workdir / "samples" / "grid_000010.png").is_file()
  assert (workdir / "samples" / "grid_000020.png").is_file()
  records = [json.loads(line) for line in
             (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [record["step"] for record in records] == [5, 10, 15, 20]
  for record in records:
    for key in ("d_loss", "g_loss", "steps_per_sec", "wall_time"):
      assert key in record
  assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
  assert "steps/s" in result.stderr and "ETA" in result.stderr


def test_sample_grid_is_a_png_of_the_right_size(tiny_run):
  from PIL import Image
  workdir, _ = tiny_run
  with Image.open(workdir / "samples" / "grid_000020.png") as image:
    # 16 samples of 28x28 tiled 4x4 with 2-pixel padding.
    assert image.size == (4 * 30 + 2, 4 * 30 + 2)


@pytest.mark.parametrize("args,expected", [
    (("--config.train.num_stepz=3",), "num_steps"),
    (("--config.optim.g_lr=-0.001",), "optim.g_lr must be positive"),
    (("--config.data.image_size=30",), "data.image_size"),
    (("--config.train.batch_size=12",), "not divisible by the 8 devices"),
    (("--config.data.name=mnist",), "mnist"),
    (("--config.loss.name=wasserstein",), "loss.name"),
])
def test_bad_input_is_one_line_and_damages_nothing(tiny_run, data_dir, args, expected):
  workdir, _ = tiny_run
  before = snapshot(workdir)
  result = run_cli(TINY, f"--workdir={workdir}", *args, data_dir=data_dir)
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert lines[-1].startswith("error: ") and expected in lines[-1], result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  assert snapshot(workdir) == before


def test_unwritable_workdir_is_refused(tmp_path, data_dir):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  result = run_cli(TINY, f"--workdir={blocker / 'run'}", data_dir=data_dir)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith("error: Cannot write to workdir")


def test_unknown_command_and_missing_flags(data_dir):
  result = run_cli("fly", "--workdir=/tmp/nowhere", data_dir=data_dir)
  assert result.returncode == 2 and "Unknown command" in result.stderr
  result = run_cli(TINY, data_dir=data_dir)
  assert result.returncode == 2 and "--workdir is required" in result.stderr
