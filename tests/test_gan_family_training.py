"""The GAN family wired into training: every recipe trains, conditioning, device-count
invariance with DiffAugment and the EMA, the EMA in sampling and checkpoints, several
discriminator steps, `run.py sample --labels`, and config validation.

Compilation dominates on CPU: each recipe's program is built and compiled once per
module (`trained`), and the tests read the states it recorded.
"""

import subprocess
import sys

import jax
import numpy as np
import pytest

from cnnjax.errors import ConfigError, DatasetError
from cnnjax.models import build_gan
from cnnjax.runs.registry import train_and_evaluate
from cnnjax.train import parallel
from cnnjax.train.gan_program import build_gan_program
from cnnjax.train.resume import flatten
from cnnjax.runs.opening import open_run
from cnnjax.runs.outputs import sample_to_png
from cnnjax.train.validation import validate_gan_config
from conftest import REPO_ROOT, load_config

RECIPES = ("cgan.py", "sngan.py", "wgan_gp.py", "lsgan.py")
NUM_CLASSES = 10
NUM_STEPS = 2


def _batches(config, num_steps: int = NUM_STEPS) -> list[dict[str, np.ndarray]]:
  """Random labelled images of the config's global batch shape (seeded)."""
  rng = np.random.default_rng(0)
  size, batch = config.data.image_size, config.train.batch_size
  return [{"image": rng.uniform(-1, 1, (batch, size, size, 1)).astype(np.float32),
           "label": rng.integers(0, NUM_CLASSES, batch).astype(np.int32)}
          for _ in range(num_steps)]


class _Run:
  """A recipe's tiny program on some devices, with its state after each step."""

  def __init__(self, recipe: str, num_devices: int):
    self.config = load_config(recipe, "tiny")
    validate_gan_config(self.config, num_devices)
    self.program = build_gan_program(
        self.config, mesh=parallel.make_data_mesh(jax.devices()[:num_devices]),
        channels=1, num_classes=NUM_CLASSES)
    self.states, self.metrics = self.train()

  def train(self):
    state, states, metrics = self.program.init_state(), [], None
    for batch in _batches(self.config):
      state, metrics = self.program.train_step(
          state, parallel.put_global_batch(batch, self.program.mesh))
      states.append(jax.device_get(state))
    return states, jax.device_get(metrics)


@pytest.fixture(scope="module")
def trained():
  """`trained(recipe, num_devices=8)`: a `_Run`, built once per module."""
  runs = {}

  def get(recipe: str, num_devices: int = 8) -> _Run:
    if (recipe, num_devices) not in runs:
      runs[recipe, num_devices] = _Run(recipe, num_devices)
    return runs[recipe, num_devices]

  return get


def _max_abs_difference(tree_a, tree_b) -> float:
  differences = jax.tree.map(
      lambda a, b: np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))),
      tree_a, tree_b)
  return float(max(jax.tree.leaves(differences)))


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_trains_on_eight_devices_with_finite_losses(trained, recipe):
  run = trained(recipe)
  assert int(run.states[-1].step) == NUM_STEPS
  assert run.metrics and all(np.isfinite(value) for value in run.metrics.values())
  expected = {"cgan.py": set(), "sngan.py": set(), "lsgan.py": set(),
              "wgan_gp.py": {"gradient_penalty"}}[recipe]
  assert {"d_loss", "g_loss", "d_grad_norm", "g_grad_norm"} | expected <= set(run.metrics)
  images = np.asarray(run.program.grids(run.states[-1])["samples"])
  assert images.shape[0] == run.config.train.num_samples
  assert np.isfinite(images).all() and np.abs(images).max() <= 1.0


@pytest.mark.parametrize("recipe", ["cgan.py", "sngan.py"])
def test_conditional_generators_follow_their_labels(trained, recipe):
  run = trained(recipe)
  assert run.program.num_classes == NUM_CLASSES
  latents = np.tile(np.asarray(run.program.grid_latents[:1]), (3, 1))
  images = np.asarray(run.program.generate(run.states[-1], latents, np.arange(3)))
  for a, b in [(0, 1), (0, 2), (1, 2)]:
    assert np.abs(images[a] - images[b]).max() > 1e-6
  # The grid has one class per row and one latent per column.
  grid_latents = np.asarray(run.program.grid_latents)
  np.testing.assert_array_equal(grid_latents[0], grid_latents[4])  # 16 samples: 4 x 4.


def test_one_and_eight_devices_agree_with_labels_diffaugment_and_ema(trained):
  config = trained("cgan.py").config
  assert config.train.diffaugment and config.optim.ema_decay > 0
  one, eight = trained("cgan.py", 1), trained("cgan.py", 8)
  assert _max_abs_difference(one.states[-1], eight.states[-1]) < 1e-5
  for name, value in one.metrics.items():
    assert eight.metrics[name] == pytest.approx(value, rel=1e-5, abs=1e-6)


def test_training_is_bit_exact_for_the_same_seed(trained):
  run = trained("cgan.py")
  again, _ = run.train()
  assert jax.tree.all(jax.tree.map(np.array_equal, run.states[-1], again[-1]))


def test_the_ema_is_updated_each_step_and_used_for_samples(trained):
  run = trained("cgan.py")
  decay = run.config.optim.ema_decay  # ema_start_step is 0 in the tiny config.
  first, second = run.states
  jax.tree.map(lambda average, params, updated: np.testing.assert_allclose(
      updated, decay * average + (1 - decay) * params, rtol=1e-6, atol=1e-7),
               first.generator_ema, second.generator.params, second.generator_ema)
  assert _max_abs_difference(second.generator_ema, second.generator.params) > 1e-5
  latents, labels = np.asarray(run.program.grid_latents), np.arange(16) % NUM_CLASSES
  from_ema = run.program.sample(second.generator_ema, second.generator.batch_stats,
                                latents, labels)
  from_params = run.program.sample(second.generator.params,
                                   second.generator.batch_stats, latents, labels)
  np.testing.assert_array_equal(run.program.generate(second, latents, labels), from_ema)
  assert np.abs(np.asarray(from_ema) - np.asarray(from_params)).max() > 1e-6


def test_several_discriminator_steps_per_generator_step(trained):
  run = trained("wgan_gp.py")
  d_steps = run.config.train.d_steps
  assert d_steps > 1
  state = run.states[-1]
  count = lambda opt_state: int(opt_state[0].count)  # optax.adam: (ScaleByAdam, ...).
  assert count(state.generator.opt_state) == NUM_STEPS
  assert count(state.discriminator.opt_state) == NUM_STEPS * d_steps


# --- The training loop: resume with the EMA, and `run.py sample --labels`. --------------

def _cgan_config(data_dir: str, num_steps: int):
  config = load_config("cgan.py", "tiny")
  config.data.data_dir = data_dir
  config.train.num_steps = num_steps
  config.train.log_every = 2
  config.train.sample_every = 100
  config.checkpoint.every = 2
  return config


@pytest.fixture(scope="module")
def cgan_run(tmp_path_factory, data_dir):
  """A conditional run (DiffAugment, EMA) of 4 steps, with checkpoints at 2 and 4."""
  workdir = tmp_path_factory.mktemp("cgan")
  train_and_evaluate(_cgan_config(data_dir, 4), str(workdir))
  return workdir


def test_resume_with_the_ema_is_bit_exact(cgan_run, tmp_path, data_dir):
  train_and_evaluate(_cgan_config(data_dir, 2), str(tmp_path))
  train_and_evaluate(_cgan_config(data_dir, 4), str(tmp_path))
  run = open_run(str(cgan_run))
  straight = run.state
  run = open_run(str(tmp_path))
  resumed, step = run.state, run.step
  assert step == 4 and jax.tree.leaves(straight.generator_ema)
  assert jax.tree.all(jax.tree.map(np.array_equal, jax.device_get(straight),
                                   jax.device_get(resumed)))


def _sample(workdir, out, *args) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "run.py", "sample", f"--workdir={workdir}",
                         f"--out={out}", *args], cwd=REPO_ROOT, capture_output=True,
                        text=True, timeout=300)


def test_sample_chosen_labels_and_refuse_unknown_ones(cgan_run, tmp_path):
  from PIL import Image
  good = _sample(cgan_run, tmp_path / "digits.png", "--num=9", "--labels=0,1,2")
  assert good.returncode == 0, good.stderr[-2000:]
  with Image.open(tmp_path / "digits.png") as image:
    assert image.size == (3 * 30 + 2, 3 * 30 + 2)  # One row per label.
  for labels, message in (("10", "not a class"), ("1,x", "comma-separated integer")):
    bad = _sample(cgan_run, tmp_path / "bad.png", f"--labels={labels}")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: ")
    assert message in bad.stderr.strip().splitlines()[-1] and "Traceback" not in bad.stderr
  assert not (tmp_path / "bad.png").exists()


def test_labels_on_an_unconditional_run_are_refused(cgan_run, tmp_path):
  config = load_config("dcgan.py", "tiny")
  (tmp_path / "config.json").write_text(config.to_json())
  (tmp_path / "data_info.json").write_text((cgan_run / "data_info.json").read_text())
  with pytest.raises(ConfigError, match="unconditional"):  # Before any checkpoint is read.
    sample_to_png(str(tmp_path), num=4, seed=0, out=str(tmp_path / "x.png"), labels=[1])


# --- Configs: one layout for every recipe; bad values are one-line errors. --------------

def _flat_keys(config) -> set[str]:
  return set(flatten(config.to_dict()))


@pytest.mark.parametrize("recipe,variants", [
    ("cgan.py", ("", "tiny", "ema", "acgan")),
    ("sngan.py", ("", "projection", "tiny", "shapes", "64")),
    ("wgan_gp.py", ("", "tiny")), ("lsgan.py", ("", "tiny"))])
def test_recipes_have_the_default_layout_and_valid_variants(recipe, variants):
  layout = _flat_keys(load_config("dcgan.py"))
  for variant in variants:
    config = load_config(recipe, variant)
    assert _flat_keys(config) == layout
    validate_gan_config(config, 8)
    with pytest.raises(AttributeError):  # Locked.
      config.train.num_stepz = 1


@pytest.mark.parametrize("field,value,message", [
    ("model.name", "biggan", "model.name"),
    ("model.g_conditioning", "projection", "model.g_conditioning"),
    ("model.d_conditioning", "cbn", "model.d_conditioning"),
    ("model.d_norm", "group", "model.d_norm"),
    ("model.sn_steps", 0, "model.sn_steps"),
    ("model.label_embed_dim", -1, "model.label_embed_dim"),
    ("loss.name", "relativistic", "loss.name"),
    ("loss.gp_weight", -1.0, "loss.gp_weight"),
    ("loss.r1_weight", 1.0, "loss.r1_weight > 0 needs"),  # BatchNorm in D.
    ("loss.aux_class_weight", -0.5, "loss.aux_class_weight"),
    ("optim.ema_decay", 1.0, "optim.ema_decay"),
    ("optim.ema_start_step", -1, "optim.ema_start_step"),
    ("train.d_steps", 0, "train.d_steps"),
    ("train.d_steps", 3, "train.d_steps=3"),  # 16 examples: not 3 x 8 devices.
    ("train.diffaugment", "color,flip", "train.diffaugment"),
    ("data.image_size", 28, "data.image_size"),  # With model.name=sngan below.
])
def test_bad_gan_family_values_are_one_line_config_errors(field, value, message):
  config = load_config("cgan.py", "tiny")
  if field == "data.image_size":
    config.model.name, config.model.d_norm = "sngan", "none"
  section, name = field.split(".")
  config[section][name] = value
  with pytest.raises(ConfigError, match=message.replace(".", r"\.")) as error:
    validate_gan_config(config, 8)
  assert "\n" not in str(error.value)


def test_inconsistent_conditioning_and_backbone_settings_are_refused():
  config = load_config("cgan.py", "tiny")
  config.model.g_conditioning = "none"
  with pytest.raises(ConfigError, match="model.d_conditioning='projection' needs"):
    validate_gan_config(config, 8)
  config.model.d_conditioning = "none"
  validate_gan_config(config, 8)
  config = load_config("sngan.py", "tiny")
  config.model.d_norm = "batch"
  with pytest.raises(ConfigError, match="model.d_norm"):
    validate_gan_config(config, 8)
  with pytest.raises(DatasetError, match="no 'label'"):  # An unlabelled dataset.
    build_gan_program(load_config("cgan.py", "tiny"), mesh=parallel.make_data_mesh(),
                      channels=1, num_classes=None)


def _shapes(module, *inputs):
  """(outputs, variables) of `module.init_with_output` as shapes: traced, not compiled."""
  return jax.eval_shape(lambda *arrays: module.init_with_output(
      jax.random.key(0), *arrays, train=True), *inputs)


@pytest.mark.parametrize("backbone,g_conditioning,d_conditioning", [
    ("dcgan", "cbn", "acgan"), ("dcgan", "concat", "concat"), ("dcgan", "concat", "none"),
    ("sngan", "concat", "acgan"), ("sngan", "cbn", "concat"),
    ("sngan", "none", "none")])
def test_every_backbone_builds_with_every_conditioning(backbone, g_conditioning,
                                                       d_conditioning):
  config = load_config("cgan.py", "tiny")
  config.model.update(name=backbone, g_conditioning=g_conditioning,
                      d_conditioning=d_conditioning,
                      d_norm="none" if backbone == "sngan" else "batch")
  conditional = g_conditioning != "none"
  generator, discriminator = build_gan(config.model, resolution=32, channels=1,
                                       axis_name=None, num_classes=NUM_CLASSES)
  latents = jax.ShapeDtypeStruct((4, config.model.latent_dim), np.float32)
  labels = (jax.ShapeDtypeStruct((4,), np.int32),) if conditional else ()
  images, _ = _shapes(generator, latents, *labels)
  assert images.shape == (4, 32, 32, 1)
  outputs, _ = _shapes(discriminator, images, *(labels if d_conditioning != "none" else ()))
  if d_conditioning == "acgan":
    assert outputs[0].shape == (4,) and outputs[1].shape == (4, NUM_CLASSES)
  else:
    assert outputs.shape == (4,)


def test_spectral_norm_and_discriminator_norms_keep_the_parameter_paths():
  images = jax.ShapeDtypeStruct((4, 28, 28, 1), np.float32)

  def discriminator_variables(**changes):
    config = load_config("dcgan.py", "tiny")
    config.model.update(**changes)
    _, discriminator = build_gan(config.model, resolution=28, channels=1, axis_name=None)
    return _shapes(discriminator, images)[1]

  plain = discriminator_variables()
  normalized = discriminator_variables(d_spectral_norm=True)
  assert jax.tree.structure(plain["params"]) == jax.tree.structure(normalized["params"])
  assert any("SpectralNorm" in name for name in normalized["batch_stats"])
  layer = discriminator_variables(d_norm="layer")
  assert "LayerNorm_0" in layer["params"] and "batch_stats" not in layer
  unnormalized = discriminator_variables(d_norm="none")
  assert "bias" in unnormalized["params"]["Conv_1"] and "BatchNorm_0" not in unnormalized[
      "params"]
