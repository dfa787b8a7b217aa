"""The in-domain classifier: model shapes, augmentation, and a tiny run on 8 devices."""

import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.errors import ConfigError
from cnnjax.models.classifier import Classifier, build_classifier, random_shift
from cnnjax.runs.registry import train_and_evaluate
from conftest import load_config


def tiny_classifier_config(data_dir: str):
  config = load_config("classifier.py", "tiny")
  config.data.data_dir = data_dir
  return config


def tiny_classifier_workdir(tmp_path_factory, data_dir: str) -> pathlib.Path:
  """The session's tiny classifier run (6 steps), trained by the first module that asks."""
  workdir = tmp_path_factory.getbasetemp() / "tiny_classifier"
  if not (workdir / "eval.json").exists():
    train_and_evaluate(tiny_classifier_config(data_dir), str(workdir))
  return workdir


def read_eval(workdir: pathlib.Path) -> dict:
  return json.loads((workdir / "eval.json").read_text())


@pytest.fixture(scope="module")
def tiny_classifier_run(tmp_path_factory, data_dir) -> pathlib.Path:
  return tiny_classifier_workdir(tmp_path_factory, data_dir)


@pytest.mark.parametrize("resolution,channels", [(28, 1), (32, 3), (64, 3)])
def test_classifier_gives_logits_and_features(resolution, channels):
  model = Classifier(num_classes=7, widths=(4, 8, 8), feature_dim=5)
  images = jax.ShapeDtypeStruct((3, resolution, resolution, channels), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                             images)
  logits, features = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False), variables, images)
  assert logits.shape == (3, 7) and features.shape == (3, 5)
  assert logits.dtype == features.dtype == jnp.float32


def test_model_config_errors_name_the_field():
  model_config = load_config("classifier.py", "tiny").model
  with model_config.unlocked():
    model_config.widths = (4, 0)
  with pytest.raises(ConfigError, match="model.widths"):
    build_classifier(model_config, num_classes=10, axis_name=None)


def test_random_shift_moves_whole_pixels_within_range():
  image = np.full((9, 9, 1), -1.0, np.float32)
  image[4, 4] = 1.0
  images = jnp.asarray(np.repeat(image[None], 64, axis=0))
  noise = jax.random.normal(jax.random.key(0), (64, 2))
  shifted = np.asarray(random_shift(images, noise, max_shift=2))
  rows, cols = np.nonzero(shifted[..., 0] == 1.0)[1:]
  assert len(rows) == 64  # One bright pixel per image, nothing interpolated.
  offsets = np.stack([4 - rows, 4 - cols], axis=1)
  assert offsets.min() == -2 and offsets.max() == 2
  assert len({tuple(offset) for offset in offsets}) > 10
  unshifted = random_shift(images, jnp.zeros((64, 2)), max_shift=2)
  np.testing.assert_array_equal(np.asarray(unshifted), np.asarray(images))


def test_tiny_run_trains_on_8_devices_and_writes_eval_json(tiny_classifier_run):
  workdir = tiny_classifier_run
  assert jax.device_count() == 8
  records = [json.loads(line) for line in
             (workdir / "metrics.jsonl").read_text().splitlines()]
  train_records = [record for record in records if "loss" in record]
  assert [record["step"] for record in train_records] == [3, 6]
  assert all(math.isfinite(record["loss"]) for record in train_records)
  evaluation = read_eval(workdir)
  assert evaluation["step"] == 6
  assert 0.0 <= evaluation["metrics"]["test_accuracy"] <= 1.0
  assert evaluation["metrics"]["test_num_examples"] == 1000
  assert evaluation["settings"]["split"] == "test"
  assert train_records[-1]["step"] == records[-1]["step"] == 6
  assert records[-1]["test_accuracy"] == evaluation["metrics"]["test_accuracy"]
  data_info = json.loads((workdir / "data_info.json").read_text())
  assert data_info["num_classes"] == 10
  assert list((workdir / "checkpoints").iterdir())


def test_relaunching_a_finished_run_trains_nothing(tiny_classifier_run, data_dir):
  workdir = tiny_classifier_run
  before = (workdir / "metrics.jsonl").read_text()
  accuracy = read_eval(workdir)["metrics"]["test_accuracy"]
  again = train_and_evaluate(tiny_classifier_config(data_dir), str(workdir))
  assert (workdir / "metrics.jsonl").read_text() == before
  assert again["test_accuracy"] == read_eval(workdir)["metrics"]["test_accuracy"] == accuracy


def test_bad_config_is_refused_before_writing(tmp_path, data_dir):
  config = tiny_classifier_config(data_dir)
  config.train.eval_batch_size = 12
  workdir = tmp_path / "run"
  with pytest.raises(ConfigError, match="eval_batch_size=12 is not divisible by the 8"):
    train_and_evaluate(config, str(workdir))
  assert not pathlib.Path(workdir).exists()
