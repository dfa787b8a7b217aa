"""CycleGAN: the step's shapes, the history pool against a direct reimplementation, exact
resume with the pool, 1 vs 8 devices, metrics with the task classifier, `run.py
translate` both ways, and the bad inputs' one-line errors."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from conftest import load_config, restored_state
from cnnjax.data.unpaired import open_domain
from cnnjax.errors import ConfigError, DatasetError, ImageError
from cnnjax.runs.registry import train_and_evaluate
from cnnjax.runs.translating import translate_to_png
from cnnjax.train import parallel
from cnnjax.train.cyclegan_program import build_cyclegan_program, validate_cyclegan_config
from cnnjax.train.image_pool import empty_pool, pool_draws, query_pool


def _config(data_dir, **train):
  config = load_config("cyclegan.py", "tiny")
  config.data.data_dir = data_dir
  for name, value in train.items():
    config.train[name] = value
  return config


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir, tiny_shape_classifier_run):
  """The tiny run trained 4 steps straight (scored every 2 with a classifier of filled
  shapes, domain B's distribution), and a copy resumed from its step-2 checkpoint."""
  root = tmp_path_factory.mktemp("cyclegan")
  straight, resumed = root / "straight", root / "resumed"
  config = _config(data_dir)
  config.eval.extractor_workdir = str(tiny_shape_classifier_run)
  # Any 3-channel classifier scores B -> A (this one's classes are domain A's too).
  config.eval.extractor_workdir_a = str(tiny_shape_classifier_run)
  config.eval.every = 2
  train_and_evaluate(config, str(straight))
  shutil.copytree(straight, resumed)
  shutil.rmtree(resumed / "checkpoints" / "4")   # As if stopped after step 2.
  train_and_evaluate(config, str(resumed))
  return straight, resumed


def _reference_query(pool: list, size: int, images, uniforms, slots):
  """The reference implementation's `ImagePool.query` (a list, one image after the
  other), with the same random numbers as `query_pool` (`pool_draws`)."""
  shown = []
  for image, uniform, slot in zip(images, uniforms, slots):
    if len(pool) < size:
      pool.append(image.copy())
      shown.append(image.copy())
    elif uniform > 0.5:
      shown.append(pool[slot].copy())
      pool[slot] = image.copy()
    else:
      shown.append(image.copy())
  return np.stack(shown)


def test_image_pool_matches_the_reference_and_is_a_reservoir():
  size = 5
  query = jax.jit(query_pool)
  pool = empty_pool(size, (2, 2, 1))
  reference, seen = [], set()
  for step in range(4):   # Full after 5 images; then swaps, also within one query.
    images = jnp.arange(4, dtype=jnp.float32)[:, None, None, None] + 4 * step + 1
    images = jnp.broadcast_to(images, (4, 2, 2, 1))
    key = jax.random.fold_in(jax.random.key(7), step)
    uniforms, slots = jax.device_get(pool_draws(key, 4, size))
    expected = _reference_query(reference, size, np.asarray(images), uniforms, slots)
    pool, shown = query(pool, images, key)
    np.testing.assert_array_equal(np.asarray(shown), expected)
    assert int(pool.count) == len(reference) == min(4 * (step + 1), size)
    np.testing.assert_array_equal(np.asarray(pool.images[:len(reference)]),
                                  np.stack(reference))
    # A reservoir: what is shown or kept is this query's images or what was kept.
    new = {float(x) for x in np.asarray(images[:, 0, 0, 0])}
    kept = {float(x) for x in np.asarray(pool.images[:int(pool.count), 0, 0, 0])}
    assert {float(x) for x in expected[:, 0, 0, 0]} <= new | seen
    assert kept <= new | seen and len(kept) == int(pool.count)
    seen = kept
  assert np.any(expected[:, 0, 0, 0] != np.asarray(images[:, 0, 0, 0]))  # Swapped some.
  _, shown = query_pool(empty_pool(0, (2, 2, 1)), images, key)   # No pool.
  np.testing.assert_array_equal(np.asarray(shown), np.asarray(images))


def test_step_shapes(data_dir):
  config = _config(data_dir)
  mesh = parallel.make_data_mesh()
  program = build_cyclegan_program(config, mesh=mesh, a_channels=3, b_channels=3)
  state = jax.eval_shape(program.init_state)
  assert set(state.players) == {"g_ab", "g_ba", "d_a", "d_b"}
  assert state.pool["fake_b"].images.shape == (4, 16, 16, 3)
  batch = {name: jax.ShapeDtypeStruct((8, 16, 16, 3), jnp.float32,
                                      sharding=parallel.data_sharded(mesh))
           for name in ("a", "b")}
  new_state, metrics = jax.eval_shape(program.train_step, state, batch)
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  assert {"g_loss", "g_gan_ab", "g_gan_ba", "cycle_a", "cycle_b", "identity_a",
          "identity_b", "d_a_loss", "d_b_loss"} <= set(metrics)
  assert all(value.shape == () for value in metrics.values())
  logits = jax.eval_shape(lambda x: program.networks.d_b.init_with_output(
      jax.random.key(0), x, train=False)[0], jnp.zeros((2, 16, 16, 3)))
  assert logits.shape == (2, 6, 6, 1)   # 16 -> 8, then two stride-1 4x4 convolutions.


def test_resume_is_exact_with_the_pool_and_metrics_are_written(runs):
  straight, resumed = runs
  a, b = restored_state(straight, 4), restored_state(resumed, 4)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  pool = a["pool"]["fake_b"]
  assert int(pool["count"]) == 4 and np.abs(np.asarray(pool["images"])).min() > 0
  lines = [json.loads(line) for line in open(straight / "metrics.jsonl")]
  assert {"g_loss", "cycle_a", "identity_b", "d_b_loss", "cycle_l1_a", "fid", "kid",
          "task_accuracy", "task_accuracy_real"} <= set().union(*lines)
  result = json.loads((straight / "eval.json").read_text())
  assert result["step"] == 4
  assert 0 <= result["metrics"]["task_accuracy"] <= 1
  assert 0 <= result["metrics"]["task_accuracy_real"] <= 1
  for name in ("fid_b_to_a", "kid_b_to_a", "task_accuracy_b_to_a",
               "task_accuracy_real_b_to_a"):
    assert np.isfinite(result["metrics"][name]), name
  assert result["settings"]["extractor_id_b_to_a"].startswith("classifier:")
  assert result["metrics"]["cycle_l1_a"] > 0
  for grid in ("a_to_b", "b_to_a"):
    assert Image.open(straight / grid / "grid_000004.png").size[0] > 3 * 16


def test_one_and_eight_devices_agree(data_dir, runs):
  del runs  # Compiles after the fixture's programs (shared cache entries).
  config = _config(data_dir)
  a, _ = open_domain(config.data, "domain_a", "train")
  b, _ = open_domain(config.data, "domain_b", "train")
  batch = {"a": a.images[:8] / 127.5 - 1, "b": b.images[8:16] / 127.5 - 1}
  initial, results = None, []
  for devices in (jax.devices(), jax.devices()[:1]):
    mesh = parallel.make_data_mesh(devices)
    program = build_cyclegan_program(config, mesh=mesh, a_channels=3, b_channels=3)
    if initial is None:   # One initialisation (compiled once), placed on both meshes.
      initial = jax.device_get(program.init_state())
    state, metrics = program.train_step(parallel.put_replicated(initial, mesh),
                                        parallel.put_global_batch(batch, mesh))
    results.append(jax.device_get((state.players, state.pool, metrics)))
  (players_8, pools_8, metrics_8), (players_1, pools_1, metrics_1) = results
  assert int(pools_1["fake_a"].count) == 4   # Full: half the batch went through swaps.
  # The same fakes in the same slots (a wrong choice would differ by O(1)); convolutions
  # of 1 and 8 examples round differently, which InstanceNorm amplifies to ~1e-5.
  for x, y in zip(jax.tree.leaves((pools_8, metrics_8)), jax.tree.leaves((pools_1, metrics_1))):
    np.testing.assert_allclose(x, y, rtol=1e-3, atol=2e-4)
  # Adam's first update is about +-lr for every parameter: a gradient element at rounding
  # level may take either sign with another reduction order, nothing else may differ.
  flat_8, flat_1 = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(
      {name: player.params for name, player in players.items()})])
                    for players in (players_8, players_1))
  difference = np.abs(flat_8 - flat_1)
  assert difference.max() <= 2 * config.optim.lr * 1.01
  assert np.mean(difference > 2e-6 + 2e-5 * np.abs(flat_1)) < 0.01


def test_translate_both_ways_and_refuse_bad_inputs(runs, tmp_path):
  straight, _ = runs
  out = tmp_path / "grid.png"
  outputs = translate_to_png(str(straight), out=str(out), split="test", num=3)
  assert outputs.shape == (3, 16, 16, 3)
  assert Image.open(out).size[0] > 3 * 16        # input | output | back.
  back = translate_to_png(str(straight), out=str(out), split="test", num=2,
                          direction="b_to_a")
  assert back.shape == (2, 16, 16, 3) and not np.allclose(back, outputs[:2])
  good = tmp_path / "good.png"
  Image.new("RGB", (16, 16)).save(good)
  assert translate_to_png(str(straight), out=str(out), input_path=str(good),
                          direction="b_to_a").shape == (1, 16, 16, 3)
  wrong = tmp_path / "wrong.png"
  Image.new("RGB", (20, 24)).save(wrong)
  with pytest.raises(ImageError, match="24x20|20x24"):
    translate_to_png(str(straight), out=str(tmp_path / "x.png"), input_path=str(wrong))
  with pytest.raises(ConfigError, match="direction must be one of a_to_b, b_to_a"):
    translate_to_png(str(straight), out=str(out), split="test", direction="sideways")
  with pytest.raises(DatasetError, match="Split 'nope'"):
    translate_to_png(str(straight), out=str(out), split="nope", direction="b_to_a")
  assert not (tmp_path / "x.png").exists()


def test_bad_inputs_are_one_line_errors(data_dir, tmp_path):
  config = _config(data_dir)
  config.data.domain_b.feature = "edges"
  workdir = tmp_path / "run"
  with pytest.raises(DatasetError, match="'shape_domains/filled_tiny' has no image "
                     "feature 'edges'.*image, label") as error:
    train_and_evaluate(config, str(workdir))
  assert "\n" not in str(error.value) and not workdir.exists()
  mesh = parallel.make_data_mesh()
  with pytest.raises(ConfigError, match="lambda_identity=0.5 needs domains with equal "
                     "channels, but A has 1 and B 3"):
    build_cyclegan_program(_config(data_dir), mesh=mesh, a_channels=1, b_channels=3)
  for field, value, message in (("model.pool_size", -1, "pool_size must be >= 0"),
                                ("data.image_size", 4, "too small"),
                                ("model.d_num_layers", 3, "below 4 pixels"),
                                ("loss.lambda_a", -1.0, "lambda_a must be >= 0"),
                                ("data.domain_a.feature", "", "domain_a.feature must")):
    config = _config(data_dir)
    section, name = field.rsplit(".", 1)
    config_section = config
    for part in section.split("."):
      config_section = config_section[part]
    config_section[name] = value
    with pytest.raises(ConfigError, match=message):
      validate_cyclegan_config(config, 8)
