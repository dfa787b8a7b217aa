"""Fast style transfer (Johnson et al.): the transformer network, the perceptual loss
against Gatys's, training lowering the loss, exact resume, 1 vs 8 devices, the content
dataset, `run.py stylize --workdir` and its bad inputs (tiny sizes)."""

import functools
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from cnnjax.data import photo_crops
from cnnjax.data.sources import get_data_source
from cnnjax.errors import DatasetError, ImageError
from cnnjax.io.images import to_uint8
from cnnjax.losses import style as style_losses
from cnnjax.models.style_features import build_feature_network
from cnnjax.models.style_transformer import MIN_SIZE, StyleTransformer
from cnnjax.runs import fast_style
from cnnjax.runs.registry import train_and_evaluate
from cnnjax.runs.restore import open_as
from cnnjax.style import gatys
from cnnjax.train import parallel
from conftest import REPO_ROOT, load_config, restored_state


def _config(data_dir, **train):
  config = load_config("fast_style.py", "tiny")
  config.data.data_dir = data_dir
  for name, value in train.items():
    config.train[name] = value
  return config


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
  """The tiny run trained 4 steps straight, and 2 + 2 with a restart."""
  straight = tmp_path_factory.mktemp("fast_style_straight")
  train_and_evaluate(_config(data_dir), str(straight))
  resumed = tmp_path_factory.mktemp("fast_style_resumed")
  train_and_evaluate(_config(data_dir, num_steps=2), str(resumed))
  train_and_evaluate(_config(data_dir), str(resumed))
  return straight, resumed


def test_transformer_keeps_any_size_and_range():
  network = StyleTransformer(widths=(4, 8, 8), num_residual_blocks=1, outer_kernel=5)
  x = jax.random.uniform(jax.random.key(0), (2, 13, 21, 3), minval=-1, maxval=1)
  params = jax.jit(network.init)(jax.random.key(1), x)["params"]
  apply = jax.jit(lambda images: network.apply({"params": params}, images))
  y = apply(x)
  assert y.shape == x.shape and float(jnp.max(jnp.abs(y))) < 1.0
  assert "stem" in params and "up1" in params and "block0_a" in params
  assert "bias" not in params["stem"] and "bias" in params["out"]  # IN removes biases.
  # Instance norm: an image's result does not depend on the rest of the batch.
  np.testing.assert_allclose(apply(x[:1]), y[:1], atol=1e-6)
  with pytest.raises(ValueError, match=f"at least {MIN_SIZE}x{MIN_SIZE}"):
    jax.eval_shape(apply, x[:, :MIN_SIZE - 1])


def test_photo_crops_splits_use_different_photographs(data_dir):
  assert not set(photo_crops.TRAIN_PHOTOS) & set(photo_crops.TEST_PHOTOS)
  assert "coffee" not in photo_crops.TRAIN_PHOTOS + photo_crops.TEST_PHOTOS
  train, info = get_data_source("photo_crops/tiny", "train", data_dir)
  test, _ = get_data_source("photo_crops/tiny", "test", data_dir)
  assert (len(train), len(test)) == (64, 16)
  assert tuple(info.features["image"].shape) == (16, 16, 3)
  assert {train[i]["photo"].decode() for i in range(64)} == set(photo_crops.TRAIN_PHOTOS)
  assert {test[i]["photo"].decode() for i in range(16)} == set(photo_crops.TEST_PHOTOS)
  assert np.std(np.asarray(train[0]["image"], np.float32)) > 5   # Not blank crops.


def test_perceptual_loss_is_gatys_loss_and_direct_formulas(data_dir):
  """The loss the network trains on is the one Gatys's optimisation reports, and its
  normalised terms match the formulas written out directly."""
  config = _config(data_dir)
  network = build_feature_network(config, fast_style.smallest_side(config))
  settings = style_losses.perceptual_settings(config)
  features_fn = jax.jit(lambda x: network.module.apply(network.variables, x))
  keys = jax.random.split(jax.random.key(3), 3)
  contents = jax.random.uniform(keys[0], (2, 16, 16, 3), minval=-1, maxval=1)
  outputs = jax.random.uniform(keys[1], (2, 16, 16, 3), minval=-1, maxval=1)
  style = jax.random.uniform(keys[2], (16, 16, 3), minval=-1, maxval=1)


  @jax.jit
  def loss_terms(contents, outputs, style):
    grams = style_losses.style_grams(features_fn, style, settings)
    targets = style_losses.perceptual_targets(features_fn, settings, contents, grams)
    return targets, style_losses.perceptual_terms(features_fn, settings, outputs, targets)

  targets, terms = loss_terms(contents, outputs, style)

  content_f, output_f = features_fn(contents), features_fn(outputs)
  style_f = features_fn(style[None])
  for index in range(2):
    scale = {name: np.mean(np.abs(np.asarray(content_f[name][index]))) + 1e-8
             for name in content_f}
    layer = settings.content_layer
    content = np.mean(np.square((np.asarray(output_f[layer][index])
                                 - np.asarray(content_f[layer][index])) / scale[layer]))
    style_value = 0.0
    for name, weight in settings.style_layer_weights:
      def gram(f):
        f = np.asarray(f, np.float64).reshape(-1, f.shape[-1])
        return f.T @ f / f.size
      style_value += weight * np.mean(np.square(
          gram(np.asarray(output_f[name][index]) / scale[name])
          - gram(np.asarray(style_f[name][0]) / scale[name])))
    np.testing.assert_allclose(terms["content"][index], content, rtol=1e-4)
    np.testing.assert_allclose(terms["style"][index], style_value, rtol=1e-3)
  # Gatys's per-image terms of the same image are the same numbers.
  gatys_settings = gatys.GatysSettings(loss=settings, optimizer="adam", steps=1,
                                       learning_rate=0.1, init="content")
  one_target = jax.tree.map(lambda x: x[:1], targets)
  _, parts = jax.jit(functools.partial(gatys._terms, features_fn=features_fn,
                                       settings=gatys_settings))(
      jnp.arctanh(outputs[0] * 0.999999), one_target)
  for term in style_losses.TERMS:
    np.testing.assert_allclose(parts[term], terms[term][0], rtol=1e-3)


def test_training_lowers_the_loss_and_devices_agree(data_dir, runs):
  del runs   # Compiles after the fixture's programs.
  config = _config(data_dir)
  source, _ = get_data_source("photo_crops/tiny", "train", data_dir)
  batch = {"image": np.stack([np.asarray(source[i]["image"]) for i in range(8)])
           .astype(np.float32) / 127.5 - 1}
  first_steps = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = parallel.make_data_mesh(devices)
    program = fast_style._build_program(config, mesh=mesh, data_info={})
    state, metrics = program.train_step(program.init_state(),
                                        parallel.put_global_batch(batch, mesh))
    first_steps.append(jax.device_get(metrics))
  # The loss terms and the gradient's norm (its sum over the devices' shards); not the
  # parameters, which Adam's first step moves by about +-lr whatever the gradient's size,
  # so that the sign of a near-zero gradient decides them.
  for name, value in first_steps[0].items():
    np.testing.assert_allclose(value, first_steps[1][name], rtol=1e-5, err_msg=name)
  losses = [float(first_steps[1]["loss"])]
  for _ in range(40):   # On the 8-device program: the same batch, so the loss must fall.
    state, metrics = program.train_step(state, parallel.put_global_batch(batch, mesh))
    losses.append(float(metrics["loss"]))
  assert np.all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0], losses


def test_resume_is_exact_and_the_run_logs_grids_and_losses(runs):
  straight, resumed = runs
  a, b = restored_state(straight, 4), restored_state(resumed, 4)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  lines = [json.loads(line) for line in open(straight / "metrics.jsonl")]
  assert [line["step"] for line in lines] == [2, 4]
  for line in lines:
    assert {"loss", "content", "style", "tv", "grad_norm"} <= set(line)
    weights = _config("").loss
    np.testing.assert_allclose(line["loss"], weights.content_weight * line["content"]
                               + weights.style_weight * line["style"]
                               + weights.tv_weight * line["tv"], rtol=1e-4)
  resumed_lines = [json.loads(line) for line in open(resumed / "metrics.jsonl")]
  assert resumed_lines[-1]["loss"] == lines[-1]["loss"]
  with Image.open(straight / "stylized" / "grid_000004.png") as grid:
    assert grid.size[0] > 2 * 16   # content | stylised, one row per test image.
  assert (straight / "tensorboard").is_dir()


def test_bad_content_data_and_style_image_are_one_line_errors(data_dir, tmp_path):
  grey = _config(data_dir)
  grey.data.name = "digits"
  with pytest.raises(DatasetError, match="RGB content images"):
    train_and_evaluate(grey, str(tmp_path / "grey"))
  missing = _config(data_dir)
  missing.style_image = str(tmp_path / "no_style.png")
  with pytest.raises(ImageError) as error:
    train_and_evaluate(missing, str(tmp_path / "missing"))
  assert "\n" not in str(error.value) and "no_style.png" in str(error.value)
  assert not (tmp_path / "grey").exists() and not (tmp_path / "missing").exists()


def _run(*args, **kwargs):
  return subprocess.run([sys.executable, "run.py", *args], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=300, **kwargs)


def test_stylize_workdir_applies_the_network_in_one_pass(runs, tmp_path):
  straight, _ = runs
  out = tmp_path / "out"
  done = _run("stylize", f"--workdir={straight}", "--content=skimage:chelsea,"
              "skimage:astronaut", f"--out={out}", "--size=24")
  assert done.returncode == 0, done.stderr[-2000:]
  result = json.loads((out / "stylize.json").read_text())
  assert result["method"] == "feed_forward" and result["step"] == 4
  assert result["num_images"] == 2 and result["image_size"] == 24
  assert result["seconds_per_image"] > 0 and result["compile_seconds"] > 0
  run = open_as(str(straight), fast_style.KIND)
  from cnnjax.data.photos import load_image
  contents = np.stack([load_image(f"skimage:{name}", 24) for name in ("chelsea",
                                                                      "astronaut")])
  expected = run.program.stylize(run.state, contents)
  terms = run.program.loss_terms(expected, contents)
  for index, item in enumerate(result["images"]):
    assert set(item["final"]) == set(style_losses.TERMS)
    np.testing.assert_allclose(item["final"]["style"], terms["style"][index], rtol=1e-4)
    np.testing.assert_allclose(item["final"]["content"], terms["content"][index],
                               rtol=1e-4)
  with Image.open(out / "stylized_chelsea.png") as image:
    assert image.size == (24, 24)
    np.testing.assert_array_equal(np.asarray(image), to_uint8(expected[0]))
  with Image.open(out / "grid.png") as grid:
    assert grid.size == (3 * 24 + 4 * 2, 2 * 24 + 3 * 2)


def test_stylize_workdir_bad_inputs_are_one_line_errors(runs, tmp_path):
  straight, _ = runs
  out = tmp_path / "never_written"
  other_kind = tmp_path / "pix2pix_run"   # What stylize reads of a run of another kind.
  other_kind.mkdir()
  config = json.loads((straight / "config.json").read_text())
  (other_kind / "config.json").write_text(json.dumps({**config, "experiment": "pix2pix"}))
  (other_kind / "data_info.json").write_text((straight / "data_info.json").read_text())
  good = ["stylize", f"--workdir={straight}", "--content=skimage:chelsea", f"--out={out}"]
  cases = {
      "drop --style": good + ["--style=skimage:coffee"],
      "drop --config": good + ["--config=configs/fast_style.py:tiny"],
      "not a 'fast_style' run": ["stylize", f"--workdir={other_kind}"] + good[2:],
      "holds no training run": ["stylize", f"--workdir={tmp_path}"] + good[2:],
      "--step needs --workdir": ["stylize", "--content=skimage:chelsea",
                                 "--style=skimage:coffee", f"--out={out}", "--step=2"],
      "step 3": good + ["--step=3"],
      "Unknown example image": good[:2] + ["--content=skimage:no_such"] + good[3:],
  }
  cases_path, results_path = tmp_path / "cases.json", tmp_path / "results.json"
  cases_path.write_text(json.dumps(list(cases.values())))
  subprocess.run([sys.executable, "tests/bad_input_harness.py", str(cases_path),
                  str(results_path)], cwd=REPO_ROOT, check=True, timeout=300)
  outcomes = json.loads(results_path.read_text())
  for expected, outcome in zip(cases, outcomes):
    lines = [line for line in outcome["stderr"].splitlines() if line.strip()]
    assert outcome["status"] == 2 and outcome["traceback"] is None, outcome
    assert len(lines) == 1 and expected in lines[0], (expected, lines)
  assert not out.exists()


def test_training_on_vgg19_features_from_a_local_weight_file(data_dir, tmp_path):
  # Random weights in torchvision's layout (the ImageNet file cannot be downloaded here):
  # the run reads them through the restricted .pth loader, as it would the real file.
  torch = pytest.importorskip("torch")
  from cnnjax.models import vgg19_weights  # pylint: disable=g-import-not-at-top
  generator = torch.Generator().manual_seed(0)
  pth = tmp_path / vgg19_weights.VGG19_FILENAME
  torch.save({key: 0.05 * torch.randn(shape, generator=generator)
              for key, shape in vgg19_weights.expected_shapes().items()}, pth)
  config = _config(data_dir)
  config.features.network = "vgg19"
  config.features.weights_path = str(pth)
  source, _ = get_data_source("photo_crops/tiny", "train", data_dir)
  batch = {"image": np.stack([np.asarray(source[i]["image"]) for i in range(8)])
           .astype(np.float32) / 127.5 - 1}
  mesh = parallel.make_data_mesh(jax.devices()[:1])
  program = fast_style._build_program(config, mesh=mesh, data_info={})
  state = program.init_state()
  losses = []
  for _ in range(3):
    state, metrics = program.train_step(state, parallel.put_global_batch(batch, mesh))
    losses.append(float(metrics["loss"]))
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
  assert (tmp_path / "vgg19-dcbb9e9d.npz").is_file()   # Converted once, beside the file.
