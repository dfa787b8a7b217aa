"""pix2pix: networks, receptive field, paired jitter, dataset features, exact resume,
1 vs 8 devices, dropout at test time, metrics with the task classifier, `run.py translate`."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT, load_config, restored_state
from cnnjax.augment.paired_jitter import jitter_batch
from cnnjax.data.paired import open_pairs
from cnnjax.errors import ConfigError, DatasetError, ImageError
from cnnjax.models.translation import (PatchGAN, ResnetGenerator, UNetGenerator,
                                       patchgan_receptive_field, unet_widths)
from cnnjax.runs.registry import train_and_evaluate
from cnnjax.runs.translating import translate_to_png
from cnnjax.train import parallel
from cnnjax.train.translation_state import make_translator


def _config(data_dir, **train):
  config = load_config("pix2pix.py", "tiny")
  config.data.data_dir = data_dir
  for name, value in train.items():
    config.train[name] = value
  return config


@pytest.fixture(scope="module")
def task_classifier(tiny_shape_classifier_run):
  """configs/classifier.py:tiny on the target domain (`image` of shape_pairs/tiny)."""
  return str(tiny_shape_classifier_run)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir, task_classifier):
  """The tiny run trained 4 steps straight, and 2 + 2 with a restart."""
  straight = tmp_path_factory.mktemp("pix2pix_straight")
  config = _config(data_dir)
  config.eval.extractor_workdir = task_classifier
  config.eval.every = 2
  train_and_evaluate(config, str(straight))
  resumed = tmp_path_factory.mktemp("pix2pix_resumed")
  train_and_evaluate(_config(data_dir, num_steps=2), str(resumed))
  train_and_evaluate(_config(data_dir), str(resumed))
  return straight, resumed


def test_networks_and_unet_skips():
  x = jnp.zeros((2, 16, 16, 1))
  widths = unet_widths(16, 4, 8)
  assert widths == (4, 8, 8, 8)                  # 16 -> 8 -> 4 -> 2 -> 1.
  assert len(unet_widths(256, 64, 512)) == 8     # pix2pix's unet_256.
  unet = UNetGenerator(widths, out_channels=3)
  params, out = jax.eval_shape(lambda: unet.init_with_output(
      jax.random.key(0), x, train=False)[::-1])
  params = params["params"]
  assert out.shape == (2, 16, 16, 3)
  # Every decoder level but the innermost reads its own output and the encoder's skip.
  assert params["up3"]["kernel"].shape[-2] == widths[3]
  for level in range(3):
    assert params[f"up{level}"]["kernel"].shape[-2] == 2 * widths[level]
  resnet = ResnetGenerator(base_width=4, num_blocks=2, out_channels=3)
  assert jax.eval_shape(lambda: resnet.init_with_output(
      jax.random.key(0), x, train=False)[0]).shape == (2, 16, 16, 3)
  patch = PatchGAN(base_width=4, num_layers=3, max_width=8)
  pair = jnp.zeros((1, 256, 256, 6))
  assert jax.eval_shape(lambda: patch.init_with_output(
      jax.random.key(0), pair, train=False)[0]).shape == (1, 30, 30, 1)  # pix2pix's 30x30.


def test_patchgan_receptive_field():
  assert [patchgan_receptive_field(n) for n in (1, 2, 3, 4)] == [16, 34, 70, 142]
  num_layers, expected, size = 3, 70, 128
  patch = PatchGAN(base_width=2, num_layers=num_layers, max_width=4, use_norm=False)
  x = jax.random.normal(jax.random.key(1), (1, size, size, 1))

  @jax.jit
  def centre_gradient(image):
    variables = patch.init(jax.random.key(0), image, train=False)
    centre = patch.apply(variables, image, train=False).shape[1] // 2
    return jax.grad(lambda im: patch.apply(variables, im, train=False)[
        0, centre, centre, 0])(image)
  grad = centre_gradient(x)
  rows = np.nonzero(np.abs(np.asarray(grad[0, :, :, 0])).sum(axis=1))[0]
  assert rows.max() - rows.min() + 1 == expected


def test_paired_jitter_is_identical_for_both_images():
  keys = jax.random.split(jax.random.key(3), 16)
  images = jax.random.uniform(jax.random.key(4), (16, 16, 16, 3), minval=-1, maxval=1)
  grey = images[..., :1]
  a, b, c = jitter_batch(keys, (images, images, grey), load_size=20, flip=True)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  np.testing.assert_array_equal(np.asarray(a[..., :1]), np.asarray(c))
  assert a.shape == images.shape
  assert not np.allclose(np.asarray(a), np.asarray(images))
  same, = jitter_batch(keys, (images,), load_size=16, flip=False)
  np.testing.assert_array_equal(np.asarray(same), np.asarray(images))


def test_missing_feature_is_one_line_error(data_dir):
  config = _config(data_dir)
  config.data.source_feature = "edges"
  with pytest.raises(DatasetError, match="no image feature 'edges'.*image, label, "
                     "outline") as error:
    open_pairs(config.data, "test")
  assert "\n" not in str(error.value)


def test_resume_is_exact_and_metrics_are_written(runs):
  straight, resumed = runs
  a, b = restored_state(straight, 4), restored_state(resumed, 4)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  lines = [json.loads(line) for line in open(straight / "metrics.jsonl")]
  assert {"d_loss", "g_l1", "g_gan", "l1", "psnr", "ssim", "fid", "kid",
          "task_accuracy", "task_accuracy_real"} <= set().union(*lines)
  result = json.loads((straight / "eval.json").read_text())
  assert result["step"] == 4
  assert 0 <= result["metrics"]["task_accuracy"] <= 1
  assert 0 <= result["metrics"]["ssim"] <= 1 and result["metrics"]["l1"] > 0
  assert (straight / "translations" / "grid_000004.png").exists()


def test_one_and_eight_devices_agree(data_dir, runs):
  del runs  # Compiles after the fixture's programs (shared cache entries).
  from cnnjax.runs.pix2pix import _build_program
  config = _config(data_dir)
  pairs, info = open_pairs(config.data, "train")
  batch = {"source": pairs.sources[:8] / 127.5 - 1, "target": pairs.targets[:8] / 127.5 - 1}
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = parallel.make_data_mesh(devices)
    program = _build_program(config, mesh=mesh, data_info=info)
    state, metrics = program.train_step(
        program.init_state(), parallel.put_global_batch(batch, mesh))
    results.append(jax.device_get((state.players, metrics)))
  for x, y in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
    np.testing.assert_allclose(x, y, rtol=2e-5, atol=2e-6)


def test_dropout_at_test_time_as_configured():
  mesh = parallel.make_data_mesh()
  unet = UNetGenerator(unet_widths(16, 4, 8), out_channels=3, num_dropout=3)
  x = jax.random.uniform(jax.random.key(0), (8, 16, 16, 3), minval=-1, maxval=1)
  params = jax.jit(lambda: unet.init(jax.random.key(1), x, train=False))()["params"]
  on = make_translator(unet, mesh=mesh, dropout=True, batch_size=8)
  off = make_translator(unet, mesh=mesh, dropout=False, batch_size=8)
  np.testing.assert_array_equal(on(params, x, 0), on(params, x, 0))
  assert not np.allclose(on(params, x, 0), on(params, x, 1))
  np.testing.assert_array_equal(off(params, x, 0), off(params, x, 1))
  # Chunking does not change the per-example dropout keys.
  np.testing.assert_allclose(on(params, x[:3], 0), on(params, x, 0)[:3], atol=1e-6)


def test_translate_writes_grids_and_refuses_bad_inputs(runs, tmp_path):
  straight, _ = runs
  out = tmp_path / "grid.png"
  outputs = translate_to_png(str(straight), out=str(out), split="test", num=3)
  assert outputs.shape == (3, 16, 16, 3)
  assert Image.open(out).size[0] > 3 * 16        # input | output | target.
  good = tmp_path / "good.png"
  Image.new("RGB", (16, 16)).save(good)
  assert translate_to_png(str(straight), out=str(out), input_path=str(good)).shape == (
      1, 16, 16, 3)
  wrong = tmp_path / "wrong.png"
  Image.new("RGB", (20, 24)).save(wrong)
  junk = tmp_path / "junk.png"
  junk.write_text("not an image")
  for path, message in ((wrong, "24x20|20x24"), (junk, "Cannot read"),
                        (tmp_path / "none.png", "does not exist")):
    with pytest.raises(ImageError, match=message):
      translate_to_png(str(straight), out=str(tmp_path / "x.png"), input_path=str(path))
  assert translate_to_png(str(straight), out=str(out), input_path=str(wrong),
                          resize=True).shape == (1, 16, 16, 3)
  with pytest.raises(ConfigError, match="exactly one"):
    translate_to_png(str(straight), out=str(out))
  with pytest.raises(DatasetError, match="Split 'nope'"):
    translate_to_png(str(straight), out=str(out), split="nope")
  assert not (tmp_path / "x.png").exists()
  result = subprocess.run(
      [sys.executable, "run.py", "translate", f"--workdir={straight}",
       f"--input={wrong}", f"--out={tmp_path / 'y.png'}"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=os.environ.copy())
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith("error: ")
  assert "24x20" in result.stderr.strip().splitlines()[-1]
  flag_error = subprocess.run(
      [sys.executable, "run.py", "translate", f"--workdir={straight}",
       f"--out={tmp_path / 'y.png'}"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=os.environ.copy())
  assert flag_error.returncode == 2 and "exactly one" in flag_error.stderr
