"""Evaluation: feature extraction over 8 devices, cached references, `run.py evaluate`."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from cnnjax.errors import ConfigError, WorkdirError
from cnnjax.evaluation import evaluate
from cnnjax.evaluation.features import Extractor
from cnnjax.evaluation.reference import load_or_compute_reference
from cnnjax.runs.classifier import load_extractor
from cnnjax.runs.registry import train_and_evaluate
from cnnjax.runs.restore import open_as
from cnnjax.runs import classifier as classifier_kind
from conftest import REPO_ROOT, load_config
from test_classifier import tiny_classifier_workdir

METRICS = ("fid", "kid_mean", "kid_std", "is_mean", "is_std", "precision", "recall",
           "density", "coverage", "c2st_accuracy", "c2st_accuracy_stderr")
SETTINGS = ("extractor_id", "num_samples", "seed", "checkpoint_step", "reference_dataset",
            "reference_split", "image_size", "num_reference", "num_reference_features",
            "kid_subset_size", "prdc_k")


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, data_dir) -> str:
  return str(tiny_classifier_workdir(tmp_path_factory, data_dir))


@pytest.fixture(scope="module")
def extractor(classifier_dir) -> Extractor:
  return load_extractor(classifier_dir, batch_size=16)


@pytest.fixture(scope="module")
def gan_dir(tmp_path_factory, data_dir, classifier_dir) -> str:
  """A finished tiny GAN run, evaluated every 10 steps with the tiny classifier and
  keeping its best checkpoint by FID."""
  config = load_config("dcgan.py", "tiny")
  config.data.data_dir = data_dir
  config.eval.every = 10
  config.eval.extractor_workdir = classifier_dir
  config.eval.num_samples = 64
  config.eval.batch_size = 32
  config.eval.reference_cache_dir = str(tmp_path_factory.mktemp("reference_cache"))
  config.checkpoint.best_metric = "fid"
  config.checkpoint.keep = 1
  workdir = str(tmp_path_factory.mktemp("gan"))
  train_and_evaluate(config, workdir)
  return workdir


def test_training_logs_every_metric_at_eval_steps_and_keeps_the_best_checkpoint(gan_dir):
  records = [json.loads(line) for line in open(os.path.join(gan_dir, "metrics.jsonl"))]
  evaluated = {record["step"]: record for record in records if "fid" in record}
  assert sorted(evaluated) == [10, 20]
  for record in evaluated.values():  # Logged with the losses, on the same line.
    assert set(METRICS) <= set(record) and "d_loss" in record
    assert all(np.isfinite(record[name]) for name in METRICS)
  best_step = min(evaluated, key=lambda step: evaluated[step]["fid"])
  steps = sorted(int(name) for name in os.listdir(os.path.join(gan_dir, "checkpoints"))
                 if name.isdigit())
  assert steps == sorted({best_step, 20})  # keep=1 newest, plus the best by FID.


def test_training_eval_without_a_classifier_fails_before_writing(data_dir, tmp_path):
  config = load_config("dcgan.py", "tiny")
  config.data.data_dir = data_dir
  config.eval.every = 10
  with pytest.raises(ConfigError, match="configs/classifier.py:digits"):
    train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def run_cli(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "run.py", *args], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=600, env=os.environ.copy())


def test_extraction_over_8_devices_equals_one_device(extractor, classifier_dir):
  images = np.random.default_rng(0).uniform(-1, 1, (37, 28, 28, 1)).astype(np.float32)
  calls_before = extractor.num_calls
  features, logits = extractor.features_and_logits(images)  # 16 + 16 + 5 (padded).
  assert extractor.num_calls - calls_before == 3
  assert features.shape == (37, extractor.num_features) and logits.shape == (37, 10)
  run = open_as(classifier_dir, classifier_kind.KIND)
  program, state = run.program, run.state
  variables = jax.device_get({"params": state.model.params,
                              "batch_stats": state.model.batch_stats})
  with jax.default_device(jax.devices()[0]):
    expected_logits, expected_features = jax.jit(
        lambda v, x: program.model.apply(v, x, train=False))(variables, images)
  np.testing.assert_allclose(features, expected_features, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(logits, expected_logits, rtol=1e-5, atol=1e-5)


def test_extractor_resizes_images_and_checks_channels(extractor):
  features, _ = extractor.features_and_logits(np.zeros((5, 32, 32, 1), np.uint8))
  assert features.shape == (5, extractor.num_features)
  with pytest.raises(ConfigError, match="takes"):
    extractor.features_and_logits(np.zeros((5, 28, 28, 3), np.float32))


def test_missing_classifier_says_how_to_train_one(tmp_path):
  with pytest.raises(WorkdirError, match="configs/classifier.py:digits"):
    load_extractor(str(tmp_path))


def test_reference_is_computed_once_then_loaded(extractor, data_dir, tmp_path):
  options = dict(dataset="digits", split="test", data_dir=data_dir, image_size=28,
                 resize="pad", max_features=300, cache_dir=str(tmp_path))
  calls_before = extractor.num_calls
  first = load_or_compute_reference(extractor, **options)
  assert extractor.num_calls > calls_before
  calls_before = extractor.num_calls
  second = load_or_compute_reference(extractor, **options)
  assert extractor.num_calls == calls_before  # Loaded, not recomputed.
  assert first.num_examples == second.num_examples == 1000
  assert second.features_nd.shape == (300, extractor.num_features)
  np.testing.assert_array_equal(first.features_nd, second.features_nd)
  np.testing.assert_allclose(first.stats.covariance, second.stats.covariance)


def test_evaluate_generator_is_deterministic_and_scores_conditional_labels(
    extractor, data_dir, tmp_path):
  reference = load_or_compute_reference(
      extractor, dataset="digits", split="test", data_dir=data_dir, image_size=28,
      resize="pad", max_features=200, cache_dir=str(tmp_path))

  def generate(key, num):
    images = jax.random.uniform(key, (num, 28, 28, 1), minval=-1.0, maxval=1.0)
    return np.asarray(images), np.arange(num) % 10

  options = dict(extractor=extractor, reference=reference, num_samples=50, seed=3,
                 batch_size=20, two_sample_steps=20)
  metrics = evaluate.evaluate_generator(generate, **options)
  assert set(METRICS) <= set(metrics) and "class_accuracy_9" in metrics
  assert all(np.isfinite(value) for value in metrics.values())
  assert evaluate.evaluate_generator(generate, **options) == metrics
  with pytest.raises(ConfigError, match="num_samples"):
    evaluate.evaluate_generator(generate, **{**options, "num_samples": 0})


def test_run_py_evaluate_writes_every_metric_and_its_settings(gan_dir):
  result = run_cli("evaluate", f"--workdir={gan_dir}", "--num_samples=48", "--seed=1")
  assert result.returncode == 0, result.stderr[-3000:]
  evaluation = json.loads(open(os.path.join(gan_dir, "eval.json")).read())
  assert set(METRICS) <= set(evaluation["metrics"])
  assert all(np.isfinite(value) for value in evaluation["metrics"].values())
  settings = evaluation["settings"]
  assert set(SETTINGS) <= set(settings)
  assert settings["num_samples"] == 48 and settings["seed"] == 1
  assert settings["checkpoint_step"] == evaluation["step"] == 20
  assert settings["reference_dataset"] == "digits"
  assert settings["reference_split"] == "test" and settings["num_reference"] == 1000
  assert settings["extractor_id"].startswith("classifier:")


@pytest.mark.parametrize("args,expected", [
    (("--num_samples=0",), "--num_samples must be positive"),
    (("--num_samples=-5",), "--num_samples must be positive"),
])
def test_run_py_evaluate_rejects_bad_sample_counts(gan_dir, args, expected):
  result = run_cli("evaluate", f"--workdir={gan_dir}", *args)
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert lines[-1].startswith("error: ") and expected in lines[-1]


def test_run_py_evaluate_without_a_classifier_says_how_to_train_one(gan_dir, tmp_path):
  for name in ("config.json", "data_info.json"):
    config = json.loads(open(os.path.join(gan_dir, name)).read())
    if name == "config.json":
      config["eval"]["extractor_workdir"] = ""
    (tmp_path / name).write_text(json.dumps(config))
  result = run_cli("evaluate", f"--workdir={tmp_path}")
  assert result.returncode == 2 and "Traceback" not in result.stderr
  last_line = result.stderr.strip().splitlines()[-1]
  assert last_line.startswith("error: No classifier")
  assert "python run.py --config=configs/classifier.py:digits" in last_line


def test_evaluate_dataset_split_scores_real_data(extractor, data_dir, tmp_path):
  metrics = evaluate.evaluate_dataset_split(
      extractor, dataset="digits", split="train", reference_split="test",
      data_dir=data_dir, image_size=28, num_samples=100, cache_dir=str(tmp_path),
      two_sample_steps=20)
  assert set(METRICS) <= set(metrics) and "class_accuracy" in metrics
  assert all(np.isfinite(value) for value in metrics.values())


def test_real_data_floor_scores_a_split_against_another(classifier_dir, tmp_path):
  out = tmp_path / "floor.json"
  result = subprocess.run(
      [sys.executable, "-m", "experiments.real_data_floor",
       f"--extractor_workdir={classifier_dir}", "--num_samples=64", f"--out={out}"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=os.environ.copy())
  assert result.returncode == 0, result.stderr[-2000:]
  floor = json.loads(out.read_text())
  assert set(METRICS) <= set(floor["metrics"])
  assert floor["settings"]["split"] == "train"
  assert floor["settings"]["reference_split"] == "test"


def test_real_data_floor_without_a_classifier_is_a_one_line_error(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "experiments.real_data_floor",
       f"--extractor_workdir={tmp_path}", f"--out={tmp_path / 'floor.json'}"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=os.environ.copy())
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith("error: ")
  assert "configs/classifier.py:digits" in result.stderr
  assert not (tmp_path / "floor.json").exists()
