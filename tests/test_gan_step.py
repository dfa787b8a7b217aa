"""The data-parallel GAN step: device-count invariance, pmap equivalence, determinism."""

import jax
import numpy as np
import pytest

from cnnjax.train import parallel
from cnnjax.train.gan_program import build_gan_program
from cnnjax.train.state import TRAIN_STREAM
from conftest import load_config

CONFIG = load_config("dcgan.py", "tiny")
RESOLUTION = CONFIG.data.image_size
BATCH = CONFIG.train.batch_size


@pytest.fixture(scope="module")
def programs():
  """Programs over 1 and 8 devices, compiled once for this module."""
  return {n: build_gan_program(CONFIG, mesh=parallel.make_data_mesh(jax.devices()[:n]),
                               channels=1) for n in (1, 8)}


def _batches(num_steps: int) -> list[dict[str, np.ndarray]]:
  rng = np.random.default_rng(0)
  return [{"image": rng.uniform(-1, 1, (BATCH, RESOLUTION, RESOLUTION, 1))
           .astype(np.float32)} for _ in range(num_steps)]


def _train(program, batches):
  state = program.init_state()
  for batch in batches:
    state, metrics = program.train_step(
        state, parallel.put_global_batch(batch, program.mesh))
  return jax.device_get(state), jax.device_get(metrics)


def _max_abs_difference(tree_a, tree_b) -> float:
  differences = jax.tree.map(
      lambda a, b: np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))),
      tree_a, tree_b)
  return float(max(jax.tree.leaves(differences)))


def test_one_and_eight_devices_give_the_same_parameters(programs):
  batches = _batches(3)
  state_1, metrics_1 = _train(programs[1], batches)
  state_8, metrics_8 = _train(programs[8], batches)
  assert int(state_8.step) == 3
  assert _max_abs_difference(state_1, state_8) < 1e-5
  for name in metrics_1:
    assert metrics_8[name] == pytest.approx(metrics_1[name], rel=1e-5, abs=1e-6)


def test_pmap_runs_the_same_per_device_step(programs):
  program = programs[8]
  batch = _batches(1)[0]
  state = program.init_state()
  expected_state, expected_metrics = jax.device_get(program.train_step(
      program.init_state(), parallel.put_global_batch(batch, program.mesh)))

  num_devices = jax.device_count()
  latents = jax.random.normal(state.step_key(TRAIN_STREAM),
                              (BATCH, CONFIG.model.latent_dim))
  split = lambda x: np.asarray(x).reshape(num_devices, -1, *np.shape(x)[1:])
  stacked_state = jax.tree.map(lambda x: np.stack([np.asarray(x)] * num_devices),
                               jax.device_get(state))
  pmapped = jax.pmap(program.per_device_step, axis_name=parallel.DATA_AXIS)
  pmap_state, pmap_metrics = jax.device_get(
      pmapped(stacked_state, {"image": split(batch["image"])}, split(latents)))
  first_replica = jax.tree.map(lambda x: x[0], pmap_state)
  assert _max_abs_difference(first_replica, expected_state) < 1e-6
  for name, value in expected_metrics.items():
    assert pmap_metrics[name][0] == pytest.approx(value, rel=1e-6, abs=1e-7)


def test_same_seed_gives_bit_identical_states(programs):
  batches = _batches(2)
  state_a, _ = _train(programs[8], batches)
  state_b, _ = _train(programs[8], batches)
  assert jax.tree.all(jax.tree.map(np.array_equal, state_a, state_b))


def test_bfloat16_compute_keeps_float32_master_weights():
  config = load_config("dcgan.py", "tiny")
  config.model.dtype = "bfloat16"
  program = build_gan_program(config, mesh=parallel.make_data_mesh(jax.devices()[:8]),
                              channels=1)
  state, metrics = _train(program, _batches(2))
  dtypes = {leaf.dtype for leaf in jax.tree.leaves(
      (state.generator.params, state.generator.opt_state,
       state.discriminator.params, state.discriminator.opt_state))
            if np.issubdtype(leaf.dtype, np.floating)}
  assert dtypes == {np.dtype(np.float32)}
  assert all(np.isfinite(value) for value in metrics.values())
  images = program.generate(state, program.grid_latents)
  assert images.dtype == np.float32 and images.shape[1:] == (RESOLUTION, RESOLUTION, 1)
