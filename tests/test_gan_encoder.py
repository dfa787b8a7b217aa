"""GAN inversion by an encoder (`gan_encoder` kind) and `run.py invert`: exact resume
with the frozen generator in the checkpoint, 1 vs 8 devices, gradients reaching the
encoder through G, held-out scores, the three inversion methods end to end (into
--out_dir only), and the bad inputs' one-line errors."""

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT, load_config, restored_state
from cnnjax.editing import inversion
from cnnjax.editing.invert_runs import run_invert
from cnnjax.errors import CheckpointError, ConfigError, WorkdirError
from cnnjax.runs.gan_encoder import KIND, generator_weights, open_encoder
from cnnjax.runs.registry import train_and_evaluate
from cnnjax.runs.restore import open_as
from cnnjax.runs import gan
from cnnjax.train import parallel
from cnnjax.train.gan_encoder_program import encoder_losses


def _config(generator_workdir, **encoder):
  config = load_config("gan_encoder.py", "tiny")
  config.encoder.generator_workdir = str(generator_workdir)
  for name, value in encoder.items():
    config.encoder[name] = value
  return config


def _tree_hash(directory: pathlib.Path) -> str:
  digest = hashlib.sha256()
  for path in sorted(p for p in directory.rglob("*") if p.is_file()):
    digest.update(str(path.relative_to(directory)).encode() + path.read_bytes())
  return digest.hexdigest()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_gan_run):
  """The tiny encoder of the tiny DCGAN, 4 steps straight, and a copy resumed from its
  step-2 checkpoint."""
  root = tmp_path_factory.mktemp("gan_encoder")
  straight, resumed = root / "straight", root / "resumed"
  gan_hash = _tree_hash(tiny_gan_run)
  config = _config(tiny_gan_run)
  train_and_evaluate(config, str(straight))
  shutil.copytree(straight, resumed)
  shutil.rmtree(resumed / "checkpoints" / "4")   # As if stopped after step 2.
  (resumed / "eval.json").unlink()
  train_and_evaluate(config, str(resumed))
  assert _tree_hash(tiny_gan_run) == gan_hash   # The GAN run is only read.
  return straight, resumed


def test_resume_is_exact_and_the_checkpoint_holds_the_generator(runs, tiny_gan_run):
  straight, resumed = runs
  a, b = restored_state(straight, 4), restored_state(resumed, 4)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  run = open_as(str(tiny_gan_run), gan.KIND)
  for x, y in zip(jax.tree.leaves(jax.device_get(generator_weights(run))),
                  jax.tree.leaves(a["generator"])):
    np.testing.assert_array_equal(x, y)
  assert int(a["generator_step"]) == run.step
  lines = [json.loads(line) for line in open(straight / "metrics.jsonl")]
  assert {"loss", "latent_mse", "image_mse", "grad_norm"} <= set(lines[-1])
  result = json.loads((straight / "eval.json").read_text())
  assert result == json.loads((resumed / "eval.json").read_text())
  metrics = result["metrics"]
  assert result["step"] == 4 and metrics["test_latent_mse"] > 0
  assert np.isfinite(metrics["test_real_psnr"]) and -1 <= metrics["test_real_ssim"] <= 1
  assert np.isfinite(metrics["test_samples_psnr"])
  data_info = json.loads((straight / "data_info.json").read_text())
  assert data_info["generator_step"] == run.step
  grid = Image.open(straight / "reconstructions" / "grid_000004.png")
  assert grid.size[0] > 28 * 2


def test_gradients_reach_the_encoder_through_the_frozen_generator(runs):
  straight, _ = runs
  run = open_encoder(str(straight))
  program, state = run.program, jax.device_get(run.state)
  latents = jax.random.normal(jax.random.key(0), (4, program.latent_dim))
  grads, terms = jax.grad(
      lambda p: encoder_losses(p, state.generator, latents, encoder=program.encoder,
                               generate=program.generate, latent_weight=0.0,
                               image_weight=1.0), has_aux=True)(state.params)
  norms = [float(np.linalg.norm(g)) for g in jax.tree.leaves(grads)]
  assert all(np.isfinite(norms)) and min(norms) > 0 and terms["image_mse"] > 0


def test_one_and_eight_devices_agree(runs):
  straight, _ = runs
  spec = open_encoder(str(straight)).spec
  results, initial = [], None
  for devices in (jax.devices(), jax.devices()[:1]):
    program = spec.build_program(parallel.make_data_mesh(devices))
    if initial is None:
      initial = jax.device_get(program.init_state())
    state, metrics = program.train_step(parallel.put_replicated(initial, program.mesh), {})
    results.append(jax.device_get((state.params, metrics)))
  (params_8, metrics_8), (params_1, metrics_1) = results
  for x, y in zip(jax.tree.leaves(metrics_8), jax.tree.leaves(metrics_1)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  # Adam's first update is about +-lr per parameter; a rounding-level gradient element
  # may take either sign under another reduction order, nothing else may differ.
  flat_8, flat_1 = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(p)])
                    for p in (params_8, params_1))
  difference = np.abs(flat_8 - flat_1)
  assert difference.max() <= 2 * 1e-3 * 1.01
  assert np.mean(difference > 2e-6 + 2e-5 * np.abs(flat_1)) < 0.01


def test_invert_with_every_method_writes_only_its_out_dir(runs, tiny_gan_run,
                                                          tiny_classifier_run, tmp_path):
  straight, _ = runs
  hashes = {path: _tree_hash(path) for path in (tiny_gan_run, straight)}
  projector = inversion.ProjectorSettings(num_steps=30, learning_rate=0.1,
                                          encoder_weight=2.0)
  result = run_invert(str(tiny_gan_run), out_dir=str(tmp_path / "out"),
                      methods=("optimize", "encoder", "hybrid"), projector=projector,
                      num_images=8, encoder_workdir=str(straight),
                      extractor_workdir=str(tiny_classifier_run), seed=3)
  assert sorted(os.listdir(tmp_path / "out")) == ["invert.json", "invert.png"]
  assert json.loads((tmp_path / "out" / "invert.json").read_text()) == result
  by_method = {entry["method"]: entry for entry in result["methods"]}
  assert list(by_method) == ["optimize", "encoder", "hybrid"]
  for entry in by_method.values():
    assert np.isfinite(entry["psnr"]) and entry["seconds_per_image"] > 0
    assert entry["feature_distance"] >= 0 and entry["latent_norm"] > 0
  assert "projector_loss" not in by_method["encoder"]
  assert result["grid_columns"] == ["target", "optimize", "encoder", "hybrid"]
  assert Image.open(tmp_path / "out" / "invert.png").size == (4 * 28 + 5 * 2,
                                                              8 * 28 + 9 * 2)
  assert {path: _tree_hash(path) for path in hashes} == hashes


def test_a_conditional_gan_is_inverted_with_each_images_class(tiny_cgan_run, tmp_path):
  """The encoder of a class-conditional G is E(x, y), trained on G(z, y) with drawn
  classes; encoder and hybrid inversion give it each real image's class."""
  config = _config(tiny_cgan_run)
  config.train.num_steps = 2
  workdir = tmp_path / "encoder_cgan"
  train_and_evaluate(config, str(workdir))
  assert json.loads((workdir / "data_info.json").read_text())["generator_classes"] == 10
  metrics = json.loads((workdir / "eval.json").read_text())["metrics"]
  assert np.isfinite(metrics["test_real_psnr"]) and metrics["test_latent_mse"] > 0
  run = open_encoder(str(workdir))
  program, state = run.program, jax.device_get(run.state)
  images = program.generate(state.generator, program.grid_latents[:4],
                            program.grid_labels[:4])
  by_class = [program.encode(state.params, images, jax.numpy.full((4,), label))
              for label in (0, 1)]
  assert not np.allclose(by_class[0], by_class[1])   # E reads the class.
  with pytest.raises(ValueError, match="pass labels exactly when"):
    program.encode(state.params, images)
  projector = inversion.ProjectorSettings(num_steps=8, learning_rate=0.1,
                                          feature_weight=0.0, encoder_weight=2.0)
  result = run_invert(str(tiny_cgan_run), out_dir=str(tmp_path / "out"),
                      methods=("encoder", "hybrid"), projector=projector, num_images=8,
                      encoder_workdir=str(workdir), seed=1)
  by_method = {entry["method"]: entry for entry in result["methods"]}
  assert all(np.isfinite(entry["psnr"]) for entry in by_method.values())
  assert by_method["hybrid"]["projector_loss"] > 0


def test_bad_inputs_are_one_line_errors(runs, tiny_gan_run, tiny_cgan_run, tiny_vae_run,
                                        tmp_path):
  straight, _ = runs
  projector = inversion.ProjectorSettings(num_steps=2, feature_weight=0.0)
  out = str(tmp_path / "out")
  with pytest.raises(CheckpointError, match="no checkpoint at step 7"):
    train_and_evaluate(_config(tiny_gan_run, generator_step=7), str(tmp_path / "enc7"))
  with pytest.raises(ConfigError, match="'vae' run, not a 'gan' run"):
    train_and_evaluate(_config(tiny_vae_run), str(tmp_path / "enc_vae"))
  with pytest.raises(ConfigError, match="generator_workdir is required"):
    train_and_evaluate(_config(""), str(tmp_path / "enc_none"))
  with pytest.raises(ConfigError, match="need --encoder_workdir"):
    run_invert(str(tiny_gan_run), out_dir=out, methods=("hybrid",), projector=projector)
  with pytest.raises(ConfigError, match="Unknown --inversion"):
    run_invert(str(tiny_gan_run), out_dir=out, methods=("sgd",), projector=projector)
  with pytest.raises(ConfigError, match="inversion is for GAN runs"):
    run_invert(str(tiny_vae_run), out_dir=out, methods=("optimize",), projector=projector)
  with pytest.raises(ConfigError, match="perceptual term needs a classifier"):
    run_invert(str(tiny_gan_run), out_dir=out, methods=("optimize",),
               projector=inversion.ProjectorSettings(num_steps=2))
  with pytest.raises(WorkdirError, match="inside the run's directory"):
    run_invert(str(tiny_gan_run), out_dir=str(straight / "x"), methods=("encoder",),
               projector=projector, encoder_workdir=str(straight))
  with pytest.raises(ConfigError, match="not a 'gan_encoder' run"):
    run_invert(str(tiny_gan_run), out_dir=out, methods=("encoder",), projector=projector,
               encoder_workdir=str(tiny_vae_run))
  with pytest.raises(ConfigError, match="was trained against step"):   # Another G.
    run_invert(str(tiny_cgan_run), out_dir=out, methods=("encoder",), projector=projector,
               encoder_workdir=str(straight), num_images=2)
  assert not os.path.exists(out)
  for extra in (["--inversion=sgd"], ["--inversion=hybrid"], ["--num_images=0"],
                ["--inversion=encoder,encoder", f"--encoder_workdir={straight}"]):
    done = subprocess.run([sys.executable, "run.py", "invert", f"--workdir={tiny_gan_run}",
                           f"--out_dir={out}", *extra], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and lines[-1].startswith("error: "), (extra, done.stderr)
  assert not os.path.exists(out)
