"""Attribute vector arithmetic: the factor model kind, directions, measured edits, the
class analogy and `run.py attributes`' bad inputs."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config
from test_run import run_cli

from cnnjax.data.factors import FACTOR_NAMES
from cnnjax.editing import attributes
from cnnjax.editing.attribute_command import run_analogy, run_attributes
from cnnjax.errors import ConfigError
from cnnjax.models.factors import decode_factors, encode_factors
from cnnjax.runs.factors import load_factor_model
from cnnjax.runs.registry import train_and_evaluate


def _train(workdir, config_file, variant, data_dir, **overrides):
  config = load_config(config_file, variant)
  config.data.data_dir = data_dir
  for path, value in overrides.items():
    section, field = path.split(".")
    config[section][field] = value
  return train_and_evaluate(config, str(workdir))


@pytest.fixture(scope="module")
def factors_run(tmp_path_factory, data_dir):
  workdir = tmp_path_factory.mktemp("factors")
  _train(workdir, "factors.py", "tiny", data_dir)
  return workdir


@pytest.fixture(scope="module")
def shapes_vae_run(tmp_path_factory, data_dir):
  workdir = tmp_path_factory.mktemp("shapes_vae")
  _train(workdir, "vae.py", "shapes,tiny", data_dir, **{
      "data.name": "shapes/tiny", "train.num_steps": 4, "eval.elbo_every": 4})
  return workdir


@pytest.fixture(scope="module")
def shapes_gan_run(tmp_path_factory, data_dir):
  workdir = tmp_path_factory.mktemp("shapes_gan")
  _train(workdir, "dcgan.py", "tiny", data_dir, **{
      "data.name": "shapes/tiny", "data.image_size": 32, "train.num_steps": 4})
  return workdir


def test_factors_run_scores_its_test_split(factors_run):
  result = json.loads((factors_run / "eval.json").read_text())
  metrics = result["metrics"]
  assert 0 <= metrics["test_accuracy"] <= 1 and metrics["test_num_examples"] == 64
  for name in FACTOR_NAMES:
    assert np.isfinite(metrics[f"test_{name}_mae"])
  assert result["step"] == 6


def test_factors_run_resumes_exactly(factors_run, tmp_path, data_dir):
  _train(tmp_path, "factors.py", "tiny", data_dir, **{"train.num_steps": 3})
  _train(tmp_path, "factors.py", "tiny", data_dir)
  straight, resumed = load_factor_model(str(factors_run)), load_factor_model(str(tmp_path))
  assert straight.step == resumed.step == 6
  for a, b in zip(jax.tree.leaves(straight._model_state),
                  jax.tree.leaves(resumed._model_state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  losses = lambda path: [record["loss"] for record in (  # noqa: E731
      json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines())
      if "loss" in record]
  assert losses(factors_run) == losses(tmp_path) and len(losses(tmp_path)) == 2


def test_factor_targets_round_trip():
  rng = np.random.default_rng(0)
  factors = np.stack([rng.uniform(0.3, 0.7, 50), rng.uniform(0.3, 0.7, 50),
                      rng.uniform(0.15, 0.3, 50), rng.uniform(0, 2 * np.pi, 50),
                      rng.uniform(0, 1, 50)], -1).astype(np.float32)
  targets = encode_factors(jnp.asarray(factors))
  assert targets.shape == (50, 7) and float(jnp.abs(targets).max()) <= 1 + 1e-5
  np.testing.assert_allclose(decode_factors(targets), factors, atol=1e-4)


def test_directions_recover_a_planted_direction():
  rng = np.random.default_rng(1)
  planted = rng.normal(size=16)
  planted /= np.linalg.norm(planted)
  latents = rng.normal(size=(600, 16)).astype(np.float32)
  positive = latents @ planted + 0.1 * rng.normal(size=600) > 0
  for method in attributes.METHODS:
    direction = attributes.attribute_direction(method, latents, positive)
    assert direction.shape == (16,)
    np.testing.assert_allclose(np.linalg.norm(direction), 1, rtol=1e-5)
    assert direction @ planted > 0.9, method
    scores = latents @ direction
    assert np.mean((scores > np.median(scores)) == positive) > 0.9


def test_linear_normal_separates_what_the_mean_difference_does_not():
  # Correlated latents: the class means differ along the major axis too, but the
  # boundary's normal is along the planted (minor) axis.
  rng = np.random.default_rng(2)
  latents = rng.normal(size=(800, 2)) * [3.0, 0.3]
  latents[:, 0] += 2 * latents[:, 1] / 0.3
  positive = latents[:, 1] > 0
  linear = attributes.linear_direction(latents, positive)
  mean = attributes.mean_difference_direction(latents, positive)
  accuracy = lambda d: np.mean((latents @ d > np.median(latents @ d)) == positive)  # noqa
  assert accuracy(linear) > 0.97 and accuracy(linear) > accuracy(mean)


def test_conditional_direction_is_orthogonal_to_the_conditions():
  rng = np.random.default_rng(3)
  primary, conditions = rng.normal(size=8), rng.normal(size=(2, 8))
  direction = attributes.conditional_direction(primary, conditions)
  np.testing.assert_allclose(conditions @ direction, 0, atol=1e-6)
  assert direction @ primary > 0
  with pytest.raises(ConfigError, match="span"):
    attributes.conditional_direction(conditions[0], conditions)


def test_edit_with_strength_zero_is_the_identity():
  latents = jax.random.normal(jax.random.key(0), (5, 4))
  edited = attributes.edit_latents(latents, jnp.ones(4) / 2, jnp.asarray([0.0, 2.0]))
  assert edited.shape == (2, 5, 4)
  np.testing.assert_array_equal(edited[0], latents)
  np.testing.assert_allclose(edited[1], latents + 1.0)


def test_measured_edit_bookkeeping():
  rng = np.random.default_rng(4)
  probs_before = np.eye(6)[rng.integers(0, 6, 10)]
  factors_before = rng.uniform(0.2, 0.8, (10, 5))
  factors_after = factors_before[None] + rng.normal(0, 0.05, (3, 10, 5))
  factors_after[..., 4] = (factors_after[..., 4] + 0.95) % 1.0  # hue wraps around
  probs_after = np.stack([probs_before, probs_before, np.roll(probs_before, 1, -1)])
  strengths = np.asarray([-1.0, 0.0, 1.0])
  results = attributes.measure_edits("scale", strengths, 0.02, probs_before,
                                     factors_before, probs_after, factors_after)
  for s, result in zip(range(3), results):
    change = factors_after[s, :, 2] - factors_before[:, 2]
    assert result["attribute_change"] == pytest.approx(change.mean())
    if strengths[s]:
      assert result["success_rate"] == pytest.approx(
          np.mean(np.sign(strengths[s]) * change >= 0.02))
    hue_change = np.abs((factors_after[s, :, 4] - factors_before[:, 4] + 0.5) % 1 - 0.5)
    others = result["other_factors_mean_abs_change"]
    assert set(others) == {"x", "y", "rotation", "hue"}
    assert others["hue"] == pytest.approx(hue_change.mean()) and others["hue"] < 0.2
    assert others["x"] == pytest.approx(np.abs(factors_after[s, :, 0]
                                               - factors_before[:, 0]).mean())
  assert results[1]["success_rate"] is None
  assert [r["class_change_rate"] for r in results] == [0.0, 0.0, 1.0]


def test_vae_attribute_edit_end_to_end(shapes_vae_run, factors_run, tmp_path):
  result = run_attributes(
      str(shapes_vae_run), out=str(tmp_path / "out"), factors_workdir=str(factors_run),
      attribute="scale", method="linear", conditions=["x"], strengths=[-2.0, 0.0, 2.0],
      threshold=0.25, num_label=64, num_edit=16, seed=0, step=None)
  saved = json.loads((tmp_path / "out" / "attributes.json").read_text())
  assert saved["edits"] == result["edits"] and saved["labelled_by"] == "ground truth"
  assert (tmp_path / "out" / "attribute_scale_linear.png").exists()
  zero = result["edits"][1]
  assert zero["attribute_change"] == 0 and zero["success_rate"] is None
  assert all(value == 0 for value in zero["other_factors_mean_abs_change"].values())


def test_gan_latents_are_labelled_deterministically(shapes_gan_run, factors_run, tmp_path):
  from cnnjax.editing.attribute_runs import labelled_latents
  from cnnjax.runs.opening import open_run
  run, factor_model = open_run(str(shapes_gan_run)), load_factor_model(str(factors_run))
  first = labelled_latents(run, factor_model, num=16, seed=1)
  second = labelled_latents(run, factor_model, num=16, seed=1)
  for a, b in zip(first, second):
    np.testing.assert_array_equal(a, b)
  latents_nz, probs_nk, factors_nf = first
  assert latents_nz.shape == (16, run.program.latent_dim)
  assert probs_nk.shape == (16, 6) and factors_nf.shape == (16, len(FACTOR_NAMES))
  np.testing.assert_allclose(probs_nk.sum(-1), 1.0, rtol=1e-6)
  # A 4-step generator draws near-constant grey images, which the tiny factor model
  # reads as one value: the edit refuses with a one-line error instead of fitting noise.
  with pytest.raises(ConfigError, match="same value on every labelled latent"):
    run_attributes(str(shapes_gan_run), out=str(tmp_path / "a"),
                   factors_workdir=str(factors_run), attribute="scale",
                   method="mean_difference", conditions=[], strengths=[0.0, 3.0],
                   threshold=0.1, num_label=64, num_edit=8, seed=1, step=None)


def test_digit_analogy_grid(tiny_vae_run, tmp_path):
  result = run_analogy(str(tiny_vae_run), out=str(tmp_path), classes=(3, 8),
                       strengths=[0.0, 1.0], num_label=400, num_edit=4, step=None)
  assert result["num_edit"] == 4 and result["difference_norm"] > 0
  assert (tmp_path / "analogy_3_to_8.png").exists()


def test_bad_runs_are_one_line_errors(tiny_vae_run, shapes_vae_run, factors_run,
                                      tmp_path):
  common = dict(out=str(tmp_path / "out"), attribute="scale", method="linear",
                conditions=[], strengths=[1.0], threshold=0.25, num_label=8,
                num_edit=8, seed=0, step=None)
  with pytest.raises(ConfigError, match="not shapes"):
    run_attributes(str(tiny_vae_run), factors_workdir=str(factors_run), **common)
  with pytest.raises(ConfigError, match="not a 'factors' run"):
    run_attributes(str(shapes_vae_run), factors_workdir=str(tiny_vae_run), **common)
  other = tmp_path / "factors_28px"
  shutil.copytree(factors_run, other)
  config = json.loads((other / "config.json").read_text())
  config["data"]["image_size"] = 28
  (other / "config.json").write_text(json.dumps(config))
  with pytest.raises(ConfigError, match="reads 28 px images with 3 channels"):
    run_attributes(str(shapes_vae_run), factors_workdir=str(other), **common)
  assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, message", [
    (["--attribute=colour"], "Unknown attribute 'colour': use one of x, y, scale, hue"),
    (["--attribute=hue", "--strengths=1,big"], "--strengths='1,big' is not"),
])
def test_bad_flags_are_one_line_errors(flags, message, tmp_path, data_dir):
  result = run_cli("attributes", f"--workdir={tmp_path}", f"--factors_workdir={tmp_path}",
                   f"--out={tmp_path / 'out'}", *flags, data_dir=data_dir)
  assert result.returncode == 2
  assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_bad_values_are_errors():
  from cnnjax.commands.attributes import parse_strengths
  assert parse_strengths("-1,0,2.5") == [-1.0, 0.0, 2.5]
  for text in ("nan", "", "1,,2", "inf"):
    with pytest.raises(ConfigError, match="finite numbers"):
      parse_strengths(text)
  with pytest.raises(ConfigError, match="Unknown method 'svm'"):
    attributes.attribute_direction("svm", np.zeros((4, 2)), np.asarray([0, 1, 0, 1]))
  with pytest.raises(ConfigError, match="same value"):
    attributes.attribute_labels("scale", np.ones(4))
  np.testing.assert_array_equal(attributes.attribute_labels("x", np.asarray(
      [0.3, 0.3, 0.3, 0.5])), [False, False, True, True])
