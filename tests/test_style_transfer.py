"""Neural style transfer: losses, feature networks, weight loading, the Gatys optimisation
and `run.py stylize` (tiny sizes; the compiled programs are shared by module fixtures)."""

import json
import os
import pathlib
import pickle
import subprocess
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from cnnjax.data import photos as style_images
from cnnjax.errors import CheckpointError, ConfigError, ImageError
from cnnjax.io.images import to_uint8
from cnnjax.losses import style as style_losses
from cnnjax.models import style_features, vgg19, vgg19_weights
from cnnjax.style import gatys
from conftest import REPO_ROOT, load_config


# ------------------------------------------------------------------------------ losses


def test_gram_and_losses_match_direct_formulas():
  rng = np.random.default_rng(0)
  f, g = rng.normal(size=(2, 5, 6, 4)), rng.normal(size=(2, 5, 6, 4))
  h, w, c = f.shape[1:]
  gram = np.stack([sum(np.outer(f[b, i, j], f[b, i, j]) for i in range(h)
                       for j in range(w)) / (h * w * c) for b in range(2)])
  np.testing.assert_allclose(style_losses.gram_matrix(jnp.asarray(f)), gram, rtol=1e-5)
  np.testing.assert_allclose(style_losses.content_loss(jnp.asarray(f), jnp.asarray(g)),
                             ((f - g) ** 2).reshape(2, -1).mean(1), rtol=1e-5)
  f2, target2 = rng.normal(size=(2, 3, 3, 7)), rng.normal(size=(2, 7, 7))
  gram2 = np.einsum("bhwc,bhwd->bcd", f2, f2) / (3 * 3 * 7)
  target1 = rng.normal(size=(2, 4, 4))
  expected = (0.5 * ((gram - target1) ** 2).mean((1, 2))
              + 2.0 * ((gram2 - target2) ** 2).mean((1, 2)))
  np.testing.assert_allclose(
      style_losses.style_loss({"a": jnp.asarray(f), "b": jnp.asarray(f2)},
                              {"a": jnp.asarray(target1), "b": jnp.asarray(target2)},
                              {"a": 0.5, "b": 2.0}), expected, rtol=1e-5)
  x = rng.normal(size=(2, 5, 6, 3))
  vertical = np.mean([(x[:, i + 1, j] - x[:, i, j]) ** 2 for i in range(4)
                      for j in range(6)], axis=(0, 2))
  horizontal = np.mean([(x[:, i, j + 1] - x[:, i, j]) ** 2 for i in range(5)
                        for j in range(5)], axis=(0, 2))
  np.testing.assert_allclose(style_losses.total_variation(jnp.asarray(x)),
                             vertical + horizontal, rtol=1e-5)
  np.testing.assert_allclose(
      style_losses.weighted_total(1.0, 2.0, 3.0, content_weight=2.0, style_weight=10.0,
                                  tv_weight=0.5), 2.0 + 20.0 + 1.5)


# ------------------------------------------------------------------------------ images


@pytest.fixture(scope="module")
def image_files(tmp_path_factory) -> dict[str, str]:
  root = tmp_path_factory.mktemp("style_images")
  rng = np.random.default_rng(1)
  files = {"rgba": str(root / "rgba.png"), "grey": str(root / "grey.jpg"),
           "garbage": str(root / "garbage.png"), "a_file": str(root / "a_file.txt")}
  Image.fromarray(rng.integers(0, 256, (40, 60, 4), np.uint8), "RGBA").save(files["rgba"])
  Image.fromarray(rng.integers(0, 256, (50, 30), np.uint8), "L").save(files["grey"])
  pathlib.Path(files["garbage"]).write_bytes(b"\x89PNG\r\n\x1a\n not really")
  pathlib.Path(files["a_file"]).write_text("a file, not a directory\n")
  return files


def test_images_are_converted_resized_and_cropped(image_files):
  for spec in (image_files["rgba"], image_files["grey"], "skimage:astronaut",
               "skimage:camera"):
    image = style_images.load_image(spec, 32)
    assert image.shape == (32, 32, 3) and image.dtype == np.float32
    assert -1.0 <= image.min() and image.max() <= 1.0
  with pytest.raises(ImageError, match="skimage:astronaut"):
    style_images.load_image("skimage:no_such_photo", 32)
  with pytest.raises(ImageError, match="Cannot read"):
    style_images.load_image(image_files["garbage"], 32)


# ------------------------------------------------------------------ the optimisation


@pytest.fixture(scope="module")
def tiny(image_files):
  """The tiny config and the images of the end-to-end command (same program)."""
  config = load_config("style_transfer.py", "tiny")
  contents = np.stack([style_images.load_image(spec, config.image_size)
                       for spec in ("skimage:astronaut", image_files["rgba"])])
  style = style_images.load_image(image_files["grey"], config.image_size)
  return config, contents, style


def _run(config, contents, style, **overrides):
  config = config.copy_and_resolve_references()
  for field, value in overrides.items():
    section, name = field.split(".")
    config[section][name] = value
  network = style_features.build_feature_network(config)
  return gatys.stylize(network, gatys.settings_from_config(config), contents, style,
                       seed=config.seed)


@pytest.fixture(scope="module")
def lbfgs_run(tiny):
  return _run(*tiny)


@pytest.fixture(scope="module")
def adam_run(tiny):
  return _run(*tiny, **{"optimizer.name": "adam"})


@pytest.mark.parametrize("which", ["lbfgs_run", "adam_run"])
def test_optimizer_lowers_the_loss(which, request, tiny):
  config, contents, _ = tiny
  result = request.getfixturevalue(which)
  assert result.images.shape == contents.shape
  assert np.all(np.abs(result.images) < 1.0)   # tanh keeps the image in range.
  for term in gatys.TERMS:
    assert result.curves[term].shape == (2, config.optimizer.steps + 1)
    assert np.all(np.isfinite(result.curves[term]))
  total = result.curves["total"]
  assert np.all(total[:, -1] < 0.95 * total[:, 0]), total
  np.testing.assert_allclose(
      total, config.loss.content_weight * result.curves["content"]
      + config.loss.style_weight * result.curves["style"]
      + config.loss.tv_weight * result.curves["tv"], rtol=1e-5)


def test_same_seed_same_result_other_seed_other_weights(tiny, lbfgs_run, adam_run):
  again = _run(*tiny)
  assert again.compile_seconds == 0.0   # The compiled program is reused.
  np.testing.assert_array_equal(again.images, lbfgs_run.images)
  for term in gatys.TERMS:
    np.testing.assert_array_equal(again.curves[term], lbfgs_run.curves[term])
  config = tiny[0].copy_and_resolve_references()
  config.seed = 1
  other = style_features.build_feature_network(config).variables
  same = style_features.build_feature_network(tiny[0]).variables
  assert jax.tree.all(jax.tree.map(np.array_equal, same,
                                   style_features.build_feature_network(tiny[0]).variables))
  assert not np.array_equal(other["params"]["conv1_1"]["kernel"],
                            same["params"]["conv1_1"]["kernel"])
  config.optimizer.name = "adam"
  reseeded = gatys.stylize(style_features.FeatureNetwork(
      style_features.build_feature_network(config).module, other),
      gatys.settings_from_config(config), *tiny[1:], seed=1)
  assert not np.array_equal(reseeded.images, adam_run.images)


def test_config_checks():
  config = load_config("style_transfer.py", "tiny")
  for field, value, match in (("network", "resnet", "network"),
                              ("content_layer", "relu9_9", "relu9_9"),
                              ("style_layer_weights", (1.0,), "one per layer"),
                              ("network", "vgg19", "weights_path")):
    bad = config.copy_and_resolve_references()
    bad.features[field] = value
    with pytest.raises(ConfigError, match=match):
      style_features.check_config(bad)
  bad = load_config("style_transfer.py")
  bad.image_size = 12   # relu5_1 is 16 times smaller than the input.
  with pytest.raises(ConfigError, match="too small"):
    style_features.check_config(bad)


# --------------------------------------------------------------------- VGG19 weights


def _reference_vgg19(torch):
  """torchvision's vgg19 (random weights), or the same `features` stack in torch.nn."""
  try:
    import torchvision
    return torchvision.models.vgg19(weights=None)
  except Exception:  # noqa: BLE001  (absent, or built for another torch)
    layers, channels = [], 3
    for _, convs, width in vgg19.BLOCKS:
      for _ in range(convs):
        layers += [torch.nn.Conv2d(channels, width, 3, padding=1), torch.nn.ReLU()]
        channels = width
      layers.append(torch.nn.MaxPool2d(2, 2))
    model = torch.nn.Module()
    model.features = torch.nn.Sequential(*layers)
    return model


def test_vgg19_matches_torch_through_the_pth_loader(tmp_path):
  torch = pytest.importorskip("torch")
  torch.manual_seed(0)
  model = _reference_vgg19(torch).eval()
  pth = tmp_path / vgg19_weights.VGG19_FILENAME
  torch.save(model.state_dict(), pth)
  variables = vgg19_weights.load_vgg19_params(pth)
  assert (tmp_path / "vgg19-dcbb9e9d.npz").is_file()   # Converted once ...
  npz_time = (tmp_path / "vgg19-dcbb9e9d.npz").stat().st_mtime_ns
  vgg19_weights.load_vgg19_params(pth)
  assert (tmp_path / "vgg19-dcbb9e9d.npz").stat().st_mtime_ns == npz_time  # ... reused.

  images = np.random.default_rng(2).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  names = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1", "pool5")
  ours = vgg19.VGG19Features(layers=names).apply(variables, jnp.asarray(images))
  mean, std = np.array(vgg19.IMAGENET_MEAN), np.array(vgg19.IMAGENET_STD)
  x = torch.from_numpy((((images + 1) / 2 - mean) / std).astype(np.float32))
  x = x.permute(0, 3, 1, 2)
  index_of = {name: index for name, index, _ in vgg19._layer_plan()}
  reference = {}
  with torch.no_grad():
    for index, layer in enumerate(model.features):
      x = layer(x)
      reference.update({name: x.permute(0, 2, 3, 1).numpy().copy()
                        for name in names if index_of[name] == index})
  for name in names:
    scale = np.abs(reference[name]).max()
    np.testing.assert_allclose(ours[name], reference[name], rtol=1e-4, atol=1e-4 * scale,
                               err_msg=name)

  config = load_config("style_transfer.py", "tiny")
  config.features.network = "vgg19"
  config.features.weights_path = str(pth)
  network = style_features.build_feature_network(config)   # Down to relu3_1 only.
  assert sorted(network.variables["params"]) == ["conv1_1", "conv1_2", "conv2_1",
                                                 "conv2_2", "conv3_1"]
  np.testing.assert_allclose(
      network.module.apply(network.variables, jnp.asarray(images))["relu3_1"],
      reference["relu3_1"], rtol=1e-4, atol=1e-4 * np.abs(reference["relu3_1"]).max())


class _RunsCode:
  def __init__(self, marker: pathlib.Path):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def test_restricted_loader_refuses_a_pickle_that_would_run_code(tmp_path):
  marker = tmp_path / "code_ran"
  payload = pickle.dumps({"features.0.weight": _RunsCode(marker)}, protocol=2)
  legacy = tmp_path / "legacy.pth"
  legacy.write_bytes(payload)
  archive = tmp_path / "archive.pth"
  with zipfile.ZipFile(archive, "w") as zipped:
    zipped.writestr("archive/data.pkl", payload)
  for path in (legacy, archive):
    with pytest.raises(CheckpointError, match=r"refusing to unpickle '(posix|os)\.system'"
                       ) as error:
      vgg19_weights.load_vgg19_params(path)
    assert "\n" not in str(error.value) and vgg19_weights.VGG19_FILENAME in str(error.value)
  assert not marker.exists()


def test_missing_or_malformed_weight_files_are_one_line_errors(tmp_path, monkeypatch):
  with pytest.raises(CheckpointError, match="does not exist.*vgg19-dcbb9e9d.pth"):
    vgg19_weights.load_vgg19_params(tmp_path / "nowhere.pth")
  garbage = tmp_path / "garbage.pth"
  garbage.write_bytes(b"not a torch file at all" * 10)
  with pytest.raises(CheckpointError, match="not a readable PyTorch state dict"):
    vgg19_weights.load_vgg19_params(garbage)
  shapes = vgg19_weights.expected_shapes()
  wrong = {key: np.zeros(shape, np.float32) for key, shape in shapes.items()}
  wrong["features.0.weight"] = np.zeros((64, 1, 3, 3), np.float32)
  np.savez(tmp_path / "wrong.npz", **wrong)
  with pytest.raises(CheckpointError, match=r"features\.0\.weight is float32\[64, 1, 3, 3\]"):
    vgg19_weights.load_vgg19_params(tmp_path / "wrong.npz")
  del wrong["features.34.bias"]
  np.savez(tmp_path / "short.npz", **wrong)
  with pytest.raises(CheckpointError, match="keys are missing"):
    vgg19_weights.load_vgg19_params(tmp_path / "short.npz")
  (tmp_path / "w.safetensors").write_bytes(b"\0" * 16)
  monkeypatch.setitem(sys.modules, "safetensors", None)
  monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
  with pytest.raises(CheckpointError, match="needs the safetensors package"):
    vgg19_weights.load_vgg19_params(tmp_path / "w.safetensors")


# ---------------------------------------------------------------------- run.py stylize


def test_stylize_command_end_to_end(tmp_path, image_files, tiny, lbfgs_run,
                                    bad_input_runs):
  out = tmp_path / "out"
  command = [sys.executable, "run.py", "stylize", "--content=skimage:astronaut,"
             + image_files["rgba"], f"--style={image_files['grey']}", f"--out={out}",
             "--config=configs/style_transfer.py:tiny"]
  done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert sorted(os.listdir(out)) == ["grid.png", "losses.png", "stylize.json",
                                     "stylized_astronaut.png", "stylized_rgba.png"]
  result = json.loads((out / "stylize.json").read_text())
  config = tiny[0]
  assert result["num_images"] == 2 and result["network"] == "random"
  assert result["seconds_per_image"] > 0 and result["num_devices"] == jax.device_count()
  for index, item in enumerate(result["images"]):
    assert len(item["curves"]["total"]) == config.optimizer.steps + 1
    assert item["final"]["total"] < item["initial"]["total"]
    np.testing.assert_allclose(item["final"]["style"],
                               lbfgs_run.curves["style"][index, -1], rtol=1e-5)
  with Image.open(out / "stylized_astronaut.png") as image:   # The same computation.
    np.testing.assert_array_equal(np.asarray(image), to_uint8(lbfgs_run.images[0]))
  with Image.open(out / "grid.png") as grid:
    assert grid.size == (3 * 32 + 4 * 2, 2 * 32 + 3 * 2)


@pytest.fixture(scope="module")
def bad_input_runs(tmp_path_factory, image_files):
  """The bad command lines, run by tests/bad_input_harness.py in one background process
  (started by the end-to-end test, so that both subprocesses overlap)."""
  tmp_path = tmp_path_factory.mktemp("stylize_bad_inputs")
  out = tmp_path / "never_written"
  good = ["stylize", "--content=skimage:astronaut", "--style=skimage:coffee",
          f"--out={out}"]
  tiny = "--config=configs/style_transfer.py:tiny"
  garbage_pth = tmp_path / "garbage.pth"
  garbage_pth.write_bytes(b"junk" * 100)
  cases = {
      "--content is required": ["stylize", "--style=skimage:coffee", f"--out={out}"],
      "--style is required": good[:2] + [f"--out={out}"],
      "--out is required": good[:3],
      "does not exist": good[:1] + [f"--content={tmp_path / 'missing.png'}"] + good[2:],
      "Cannot read": good[:1] + [f"--content={image_files['garbage']}"] + good[2:],
      "Unknown example image": good + ["--style=skimage:no_such_photo"],
      "flag --size": good + ["--size=abc"],
      "flag --size=3": good + ["--size=3"],
      "too small": good + ["--size=12"],
      "is a file": good + [f"--out={image_files['a_file']}"],
      "needs features.weights_path": good + [tiny, "--config.features.network=vgg19"],
      "VGG19 weight file": good + [tiny, "--config.features.network=vgg19",
                                   f"--config.features.weights_path={tmp_path}/no.pth"],
      "not a readable PyTorch": good + [tiny, "--config.features.network=vgg19",
                                        f"--config.features.weights_path={garbage_pth}"],
      "Unknown optimizer.name": good + [tiny, "--config.optimizer.name=sgd"],
      "style transfer config": good + ["--config=configs/dcgan.py:tiny"],
      "drop --workdir": good + [f"--workdir={tmp_path}"],
  }
  cases_path, results_path = tmp_path / "cases.json", tmp_path / "results.json"
  cases_path.write_text(json.dumps(list(cases.values())))
  process = subprocess.Popen([sys.executable, "tests/bad_input_harness.py",
                              str(cases_path), str(results_path)], cwd=REPO_ROOT)
  yield cases, process, results_path, out
  if process.poll() is None:
    process.kill()


def test_stylize_bad_inputs_are_one_line_errors_writing_nothing(bad_input_runs):
  cases, process, results_path, out = bad_input_runs
  assert process.wait(timeout=300) == 0
  outcomes = json.loads(results_path.read_text())
  assert len(outcomes) == len(cases)
  for expected, outcome in zip(cases, outcomes):
    lines = [line for line in outcome["stderr"].splitlines() if line.strip()]
    assert outcome["status"] == 2 and outcome["traceback"] is None, outcome
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in outcome[
        "stderr"], outcome
    assert expected.split("=")[0] in lines[-1], (expected, lines[-1])
  assert not out.exists()
