"""VAE runs through the shared runtime: tiny configs train on 8 devices, 1 and 8 devices
agree, resume is bit-exact, and a run is sampled and scored from its checkpoints."""

import json
import pathlib

import jax
import numpy as np
import pytest

from cnnjax.evaluation.vae_likelihood import LIKELIHOOD_FILE, evaluate_vae_run
from cnnjax.train import parallel, sampling, vae_loop
from cnnjax.train.vae_program import build_vae_program
from conftest import load_config


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
  _, _, state, step = sampling.restore_run_state(str(workdir))
  return jax.device_get(state), step


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, data_dir):
  """The tiny VAE, 20 steps in one go on 8 devices (checkpoints at 10 and 20)."""
  workdir = tmp_path_factory.mktemp("vae_straight")
  metrics = vae_loop.train_and_evaluate(tiny_config(data_dir), str(workdir))
  return workdir, metrics


def test_tiny_vae_trains_with_finite_losses_and_held_out_elbo(straight_run):
  workdir, metrics = straight_run
  assert jax.device_count() == 8
  assert np.isfinite(metrics["loss"]) and metrics["nonfinite_steps"] == 0
  records = read_metrics(workdir)
  assert sorted(records) == [5, 10, 15, 20]
  # The held-out ELBO of steps 0, 10 and 20 (eval.every = 10), the latest at each log.
  assert [records[step]["test_step"] for step in (5, 10, 15, 20)] == [0, 10, 10, 20]
  assert all(np.isfinite(records[step]["test_neg_elbo"]) for step in records)
  for name in ("reconstructions", "samples", "traversals"):
    assert (workdir / name / "grid_000020.png").is_file()


@pytest.mark.parametrize("variant", ["beta,tiny", "cvae,tiny"])
def test_tiny_variants_train_with_finite_losses(variant, tmp_path, data_dir):
  config = tiny_config(data_dir, variant, train__num_steps=10)
  metrics = vae_loop.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["test_neg_elbo"])
  if variant.startswith("beta"):
    assert metrics["beta"] == pytest.approx(4.0 * 9 / 10)   # Warm-up: step 9 of 10.
  else:
    assert (tmp_path / "classes" / "grid_000010.png").is_file()


def test_resume_is_bit_exact(straight_run, tmp_path, data_dir):
  workdir, _ = straight_run
  vae_loop.train_and_evaluate(tiny_config(data_dir, train__num_steps=10), str(tmp_path))
  vae_loop.train_and_evaluate(tiny_config(data_dir), str(tmp_path))
  (state_a, step_a), (state_b, step_b) = final_state(workdir), final_state(tmp_path)
  assert step_a == step_b == 20
  assert all(jax.tree.leaves(jax.tree.map(np.array_equal, state_a, state_b)))
  metrics_a, metrics_b = read_metrics(workdir), read_metrics(tmp_path)
  for step in (15, 20):
    for name in ("loss", "neg_elbo", "kl", "test_neg_elbo"):
      assert metrics_a[step][name] == metrics_b[step][name]


def test_sampling_and_likelihood_evaluation_from_checkpoints(straight_run, tmp_path):
  workdir, _ = straight_run
  step = sampling.sample_to_png(str(workdir), num=4, seed=0, out=str(tmp_path / "s.png"))
  assert step == 20 and (tmp_path / "s.png").is_file()
  result = evaluate_vae_run(str(workdir), num_importance=4, seed=1)
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
