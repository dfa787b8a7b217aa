"""VAE runs through the shared runtime: tiny configs train on 8 devices, 1 and 8 devices
agree, resume is bit-exact, grids are written, and a run is sampled and scored (FID etc.
with the tiny classifier, ELBO and IWAE) from its checkpoints, from Python and run.py."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from cnnjax.evaluation.features import load_split
from cnnjax.evaluation.vae_likelihood import LIKELIHOOD_FILE
from cnnjax.runs.opening import open_run
from cnnjax.runs.outputs import evaluate_run, likelihood_run, sample_to_png
from cnnjax.runs.registry import train_and_evaluate
from cnnjax.train import parallel
from cnnjax.train.vae_program import build_vae_program, grid_labels
from conftest import REPO_ROOT, load_config
from test_classifier import tiny_classifier_workdir

SAMPLE_METRICS = ("fid", "kid_mean", "is_mean", "precision", "recall", "density",
                  "coverage", "c2st_accuracy")


def tiny_config(data_dir: str, variant: str = "tiny", **overrides):
  config = load_config("vae.py", variant)
  config.data.data_dir = data_dir
  for name, value in overrides.items():
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


def run_cli(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True,
                        text=True, timeout=600, env=os.environ.copy())


def grid_side(image: Image.Image, tile: int = 28, padding: int = 2) -> tuple[int, int]:
  """(columns, rows) of tiles in a grid written by `cnnjax.io.images.make_grid`."""
  return tuple((size - padding) // (tile + padding) for size in image.size)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, data_dir) -> str:
  return str(tiny_classifier_workdir(tmp_path_factory, data_dir))


@pytest.fixture(scope="module")
def cvae_run(tmp_path_factory, data_dir, classifier_dir):
  """The tiny CVAE, 10 steps, its prior samples scored with the tiny classifier at the
  last step (eval.every = 10)."""
  workdir = tmp_path_factory.mktemp("cvae")
  config = tiny_config(data_dir, "cvae,tiny", train__num_steps=10, eval__every=10,
                       eval__extractor_workdir=classifier_dir)
  metrics = train_and_evaluate(config, str(workdir))
  return workdir, metrics


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, data_dir):
  """The tiny VAE, 20 steps in one go on 8 devices (checkpoints at 10 and 20)."""
  workdir = tmp_path_factory.mktemp("vae_straight")
  metrics = train_and_evaluate(tiny_config(data_dir), str(workdir))
  return workdir, metrics


def test_tiny_vae_trains_and_writes_held_out_elbos_and_grids(straight_run, data_dir):
  workdir, metrics = straight_run
  assert jax.device_count() == 8
  assert np.isfinite(metrics["loss"]) and metrics["nonfinite_steps"] == 0
  records = read_metrics(workdir)
  assert sorted(records) == [5, 10, 15, 20]
  # The held-out ELBO of steps 0, 10 and 20 (eval.elbo_every = 10), the latest at
  # each log.
  assert [records[step]["test_step"] for step in (5, 10, 15, 20)] == [0, 10, 10, 20]
  assert all(np.isfinite(records[step]["test_neg_elbo"]) for step in records)
  for step in (10, 20):
    for name in ("reconstructions", "samples", "traversals"):
      assert (workdir / name / f"grid_{step:06d}.png").is_file()
  with Image.open(workdir / "samples" / "grid_000020.png") as image:
    assert grid_side(image) == (4, 4)   # train.num_samples = 16.
  with Image.open(workdir / "traversals" / "grid_000020.png") as image:
    assert grid_side(image) == (4, 4)   # One row per latent dimension (4), 4 values.
  # Reconstructions: the first 8 held-out images (even columns), each beside its output.
  test_images, _ = load_split("digits", "test", data_dir, 28, "pad")
  with Image.open(workdir / "reconstructions" / "grid_000020.png") as image:
    assert grid_side(image) == (4, 4)
    grid = np.asarray(image)
  tile = lambda row, col: grid[2 + row * 30:30 + row * 30, 2 + col * 30:30 + col * 30]
  for index in range(8):
    row, col = divmod(2 * index, 4)
    np.testing.assert_array_equal(tile(row, col), test_images[index, ..., 0])
    assert not np.array_equal(tile(row, col + 1), test_images[index, ..., 0])


def test_tiny_beta_vae_warms_up_its_kl_weight(tmp_path, data_dir):
  config = tiny_config(data_dir, "beta,tiny", train__num_steps=10)
  metrics = train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["test_neg_elbo"])
  assert metrics["beta"] == pytest.approx(4.0 * 9 / 10)   # Warm-up: step 9 of 10.


def test_tiny_cvae_trains_and_scores_its_samples_during_training(cvae_run):
  workdir, metrics = cvae_run
  assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["test_neg_elbo"])
  # Sample quality of step 10, logged with the losses, and of the conditioning labels.
  assert all(np.isfinite(metrics[name]) for name in SAMPLE_METRICS)
  assert 0.0 <= metrics["class_accuracy"] <= 1.0
  assert read_metrics(workdir)[10]["fid"] == metrics["fid"]
  with Image.open(workdir / "classes" / "grid_000010.png") as image:
    assert grid_side(image) == (10, 10)   # One row per class, one latent per column.


def test_cvae_samples_have_one_class_per_grid_row():
  assert grid_labels(16, 10).tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
  assert grid_labels(100, 10).reshape(10, 10)[:, 0].tolist() == list(range(10))
  assert grid_labels(9, 10).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
  assert grid_labels(12, 3).tolist() == [0] * 4 + [1] * 4 + [2] * 4
  assert grid_labels(5, 0).tolist() == [0] * 5   # Unconditional: ignored.


def test_resume_is_bit_exact(straight_run, tmp_path, data_dir):
  workdir, _ = straight_run
  train_and_evaluate(tiny_config(data_dir, train__num_steps=10), str(tmp_path))
  train_and_evaluate(tiny_config(data_dir), str(tmp_path))
  (state_a, step_a), (state_b, step_b) = final_state(workdir), final_state(tmp_path)
  assert step_a == step_b == 20
  assert all(jax.tree.leaves(jax.tree.map(np.array_equal, state_a, state_b)))
  metrics_a, metrics_b = read_metrics(workdir), read_metrics(tmp_path)
  for step in (15, 20):
    for name in ("loss", "neg_elbo", "kl", "test_neg_elbo"):
      assert metrics_a[step][name] == metrics_b[step][name]


def test_sampling_and_likelihood_evaluation_from_checkpoints(straight_run, tmp_path):
  workdir, _ = straight_run
  step = sample_to_png(str(workdir), num=4, seed=0, out=str(tmp_path / "s.png"))
  assert step == 20 and (tmp_path / "s.png").is_file()
  result = likelihood_run(str(workdir), num_importance=4, seed=1)
  assert json.loads((workdir / LIKELIHOOD_FILE).read_text()) == result
  assert result["settings"] == {**result["settings"], "k": 4, "split": "test",
                                "step": 20, "seed": 1}
  metrics = result["metrics"]
  assert metrics["num_examples"] == 1000
  # IWAE (k = 4) is the tighter bound, up to Monte-Carlo error.
  assert metrics["iwae_nll_nats"] <= metrics["neg_elbo_nats"] + 3 * metrics[
      "neg_elbo_nats_stderr"]
  assert metrics["neg_elbo_bits_per_dim"] == pytest.approx(
      metrics["neg_elbo_nats"] / (28 * 28 * np.log(2)))


def test_run_py_evaluate_scores_vae_prior_samples(straight_run, classifier_dir):
  workdir, _ = straight_run
  result = run_cli("run.py", "evaluate", f"--workdir={workdir}", "--num_samples=32",
                   "--seed=1", f"--extractor_workdir={classifier_dir}")
  assert result.returncode == 0, result.stderr[-3000:]
  evaluation = json.loads((workdir / "eval.json").read_text())
  assert evaluation["step"] == 20 and evaluation["settings"]["num_samples"] == 32
  assert evaluation["settings"]["extractor_id"].startswith("classifier:")
  assert all(np.isfinite(evaluation["metrics"][name]) for name in SAMPLE_METRICS)
  assert "class_accuracy" not in evaluation["metrics"]   # Unconditional.


def test_run_py_sample_and_evaluate_a_cvae_run(cvae_run, tmp_path):
  workdir, _ = cvae_run
  out = tmp_path / "cvae.png"
  result = run_cli("run.py", "sample", f"--workdir={workdir}", "--num=16", "--seed=0",
                   f"--out={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  with Image.open(out) as image:
    assert grid_side(image) == (4, 4)
  # In-process, with the run's own eval.extractor_workdir.
  result = evaluate_run(str(workdir), num_samples=32, seed=2)
  assert result == json.loads((workdir / "eval.json").read_text())
  assert all(np.isfinite(result["metrics"][name]) for name in SAMPLE_METRICS)
  assert 0.0 <= result["metrics"]["class_accuracy"] <= 1.0


@pytest.mark.parametrize("args,expected", [
    (("run.py", "sample", "--workdir={empty}", "--out={empty}/s.png"),
     "holds no training run"),
    (("run.py", "evaluate", "--workdir={vae}"), "No classifier to score the run with"),
    (("run.py", "evaluate", "--workdir={vae}", "--extractor_workdir={empty}"),
     "configs/classifier.py:digits"),
    (("run.py", "likelihood", "--workdir={classifier}"), "not a 'vae' run"),
])
def test_bad_paths_give_one_line_errors(straight_run, classifier_dir, tmp_path, args,
                                        expected):
  paths = {"empty": tmp_path, "vae": straight_run[0], "classifier": classifier_dir}
  result = run_cli(*[arg.format(**paths) for arg in args])
  assert result.returncode == 2 and "Traceback" not in result.stderr
  last_line = result.stderr.strip().splitlines()[-1]
  assert last_line.startswith("error: ") and expected in last_line, result.stderr[-2000:]


def test_one_and_eight_devices_give_the_same_parameters():
  config = load_config("vae.py", "cvae,tiny")
  batch_size, size = config.train.batch_size, config.data.image_size
  rng = np.random.default_rng(0)
  batches = [{"image": rng.uniform(-1, 1, (batch_size, size, size, 1)).astype(np.float32),
              "label": rng.integers(0, 10, batch_size).astype(np.int32)} for _ in range(3)]
  results = []
  for num_devices in (1, 8):
    program = build_vae_program(
        config, mesh=parallel.make_data_mesh(jax.devices()[:num_devices]), channels=1,
        num_classes=10)
    state = program.init_state()
    for batch in batches:
      state, metrics = program.train_step(state, parallel.put_global_batch(
          batch, program.mesh))
    results.append(jax.device_get((state.params, metrics)))
  (params_1, metrics_1), (params_8, metrics_8) = results
  differences = jax.tree.map(lambda a, b: np.max(np.abs(a - b)), params_1, params_8)
  assert max(jax.tree.leaves(differences)) < 1e-5
  for name, value in metrics_1.items():
    assert metrics_8[name] == pytest.approx(value, rel=1e-5, abs=1e-5)
