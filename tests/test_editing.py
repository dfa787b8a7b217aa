"""Latent paths, truncation, class interpolation and inpainting on the tiny runs, and
`run.py edit`'s outputs and one-line errors."""

import hashlib
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from cnnjax.editing import edit_runs, inpaint_runs, inpainting, inversion, latent_paths
from cnnjax.editing.edit_command import EditOptions, run_edit
from cnnjax.editing.editable import open_editable, read_editable, read_mask
from cnnjax.errors import ConfigError, ImageError, WorkdirError
from cnnjax.models.conditioning import ConditionalGenerator
from cnnjax.models.vae import Decoder
from conftest import REPO_ROOT


@pytest.fixture(scope="module")
def gan(tiny_gan_run):
  return open_editable(read_editable(str(tiny_gan_run)))


@pytest.fixture(scope="module")
def cgan(tiny_cgan_run):
  return open_editable(read_editable(str(tiny_cgan_run)))


@pytest.fixture(scope="module")
def vae(tiny_vae_run):
  return open_editable(read_editable(str(tiny_vae_run)))


def _digits(vae, num):
  from cnnjax.editing.editable import read_inputs
  return read_inputs(read_editable(vae.workdir), image_paths=None, split="test",
                     count=num)


# Latent paths.

def test_slerp_matches_the_formula_keeps_equal_norms_and_hits_the_ends():
  a, b = jax.random.normal(jax.random.key(0), (2, 16))
  b = b * jnp.linalg.norm(a) / jnp.linalg.norm(b)
  t = jnp.linspace(0.0, 1.0, 7)
  out = latent_paths.slerp(a, b, t)
  omega = np.arccos(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
  direct = (np.sin((1 - t[:, None]) * omega) * a + np.sin(t[:, None] * omega) * b) / np.sin(omega)
  np.testing.assert_allclose(out, direct, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out[0], a, atol=1e-5)
  np.testing.assert_allclose(out[-1], b, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(out, axis=-1), np.linalg.norm(a), rtol=1e-5)
  linear = latent_paths.lerp(a, b, t)
  assert np.linalg.norm(linear[3]) < 0.9 * np.linalg.norm(a)   # lerp dips inside.
  np.testing.assert_allclose(latent_paths.slerp(a, 2 * a, t), latent_paths.lerp(a, 2 * a, t),
                             rtol=1e-6)   # Parallel latents: the linear path.


def test_a_path_through_anchors_passes_each_once():
  anchors = jax.random.normal(jax.random.key(1), (3, 5))
  for method in latent_paths.METHODS:
    out = latent_paths.path(anchors, 4, method)
    assert out.shape == (latent_paths.path_length(3, 4), 5) == (7, 5)
    np.testing.assert_allclose(out[::3], anchors, atol=1e-5)


def test_traversal_and_truncation():
  z = jnp.arange(4.0)
  out = latent_paths.traverse(z, latent_paths.coordinate_directions(jnp.array([2]), 4)[0],
                              jnp.array([-1.0, 0.0, 2.0]))
  np.testing.assert_array_equal(out[:, 2], [1.0, 2.0, 4.0])
  np.testing.assert_array_equal(out[:, [0, 1, 3]], np.tile([0.0, 1.0, 3.0], (3, 1)))
  latents = jax.random.normal(jax.random.key(2), (6, 8))
  np.testing.assert_array_equal(latent_paths.truncate(latents, 1.0), latents)
  np.testing.assert_array_equal(latent_paths.truncate(latents, 0.0), jnp.zeros_like(latents))
  mean = jnp.full((8,), 0.5)
  np.testing.assert_allclose(latent_paths.truncate(latents, 0.0, mean),
                             jnp.broadcast_to(mean, latents.shape))


def test_resampling_truncation_redraws_only_the_outliers():
  z = jax.random.normal(jax.random.key(3), (64,)) * 2.0
  out = latent_paths.resample_truncated(jax.random.key(4), z, 0.5)
  assert float(jnp.max(jnp.abs(out))) <= 0.5
  inside = np.abs(z) <= 0.5
  np.testing.assert_array_equal(out[inside], z[inside])
  np.testing.assert_array_equal(out, latent_paths.resample_truncated(jax.random.key(4), z, 0.5))
  assert not np.array_equal(out, latent_paths.resample_truncated(jax.random.key(5), z, 0.5))


def test_mixed_class_weights_embed_like_integer_labels():
  labels = jnp.array([0, 2, 1])
  weights = jax.nn.one_hot(labels, 3)
  z = jax.random.normal(jax.random.key(0), (3, 4))
  models = [ConditionalGenerator(resolution=28, channels=1, num_classes=3,
                                 conditioning=conditioning, width=2)
            for conditioning in ("concat", "cbn")]
  models.append(Decoder(resolution=28, channels=1, width=2, num_classes=3))

  @jax.jit
  def both(z, labels, weights):
    out = []
    for model in models:
      options = {} if isinstance(model, Decoder) else {"train": False}
      variables = model.init(jax.random.key(1), z, labels, **options)
      out.append((model.apply(variables, z, labels, **options),
                  model.apply(variables, z, weights, **options)))
    return out

  for from_labels, from_weights in both(z, labels, weights):
    np.testing.assert_allclose(from_weights, from_labels, atol=1e-6)
  weights_path = latent_paths.class_weight_path(jnp.array([0, 2]), 3, 5)
  np.testing.assert_allclose(weights_path.sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(weights_path[jnp.array([0, -1])],
                                jax.nn.one_hot(jnp.array([0, 2]), 3))


# Path edits of the tiny runs.

def test_gan_interpolation_is_deterministic_and_framed(gan):
  numbers, grids = edit_runs.interpolate(gan, method="slerp", num_anchors=3, num_steps=3,
                                         rows=2, seed=7)
  images = grids["interpolate_slerp"]
  assert images.shape == (2, 5, *gan.image_shape)
  _, again = edit_runs.interpolate(gan, method="slerp", num_anchors=3, num_steps=3,
                                   rows=2, seed=7)
  np.testing.assert_array_equal(images, again["interpolate_slerp"])
  _, other = edit_runs.interpolate(gan, method="slerp", num_anchors=3, num_steps=3,
                                   rows=2, seed=8)
  assert not np.array_equal(images, other["interpolate_slerp"])
  anchors = edit_runs.prior_latents(7, 2, (3, gan.latent_dim))
  np.testing.assert_allclose(images[:, ::2], edit_runs.decode(
      gan, anchors.reshape(-1, gan.latent_dim)).reshape(images[:, ::2].shape), atol=1e-5)
  assert numbers["latent_norm_min_along_path"] <= numbers["latent_norm_at_anchors"]


def test_vae_interpolates_and_traverses_real_encodings(vae):
  images, labels = _digits(vae, 4)
  _, grids = edit_runs.interpolate(vae, method="linear", num_anchors=2, num_steps=3,
                                   rows=2, seed=0, images_nhwc=images, labels_n=None)
  grid = grids["interpolate_linear"]
  assert grid.shape == (2, 5, *vae.image_shape)
  np.testing.assert_array_equal(grid[:, 0], images[0::2])    # Framed by the inputs.
  np.testing.assert_array_equal(grid[:, -1], images[1::2])
  decoded = edit_runs.decode(vae, edit_runs.encode(vae, images))
  np.testing.assert_allclose(grid[:, 1], decoded[0::2], atol=1e-5)
  numbers, grids = edit_runs.traverse(vae, coordinates=[0, 3], direction_z=None, span=2.0,
                                      num_steps=3, rows=2, seed=0, images_nhwc=images[:2])
  assert grids["traverse"].shape == (4, 4, *vae.image_shape)
  assert numbers["directions"] == [0, 3] and len(numbers["end_to_end_change"]) == 2
  with pytest.raises(ConfigError, match="outside"):
    edit_runs.traverse(vae, coordinates=[9], direction_z=None, span=1.0, num_steps=2,
                       rows=1, seed=0, images_nhwc=images[:1])
  with pytest.raises(ConfigError, match="direction"):
    edit_runs.traverse(vae, coordinates=[], direction_z=np.ones(3), span=1.0,
                       num_steps=2, rows=1, seed=0, images_nhwc=images[:1])


def test_truncation_grid_of_a_cgan_ends_at_the_mean_latent(cgan):
  numbers, grids = edit_runs.truncate(cgan, psis=[1.0, 0.0], thresholds=[0.5], rows=2,
                                      seed=1)
  psi = grids["truncate_psi"]
  classes = edit_runs.row_classes(cgan, 1, 2)
  np.testing.assert_allclose(psi[:, 1], edit_runs.decode(
      cgan, np.zeros((2, cgan.latent_dim)), classes), atol=1e-5)
  assert numbers["latent_norm"][1] == 0.0
  assert numbers["resample"]["max_abs_latent"][1] <= 0.5
  assert grids["truncate_resample"].shape[:2] == (2, 2)


def test_class_interpolation_ends_at_the_integer_classes(cgan, gan):
  numbers, grids = edit_runs.class_interpolate(cgan, classes=[3, 8], num_steps=3, rows=2,
                                               seed=2)
  images = grids["class_interpolate"]
  latents = edit_runs.prior_latents(2, 2, (cgan.latent_dim,))
  for column, label in ((0, 3), (-1, 8)):
    np.testing.assert_allclose(images[:, column], edit_runs.decode(
        cgan, latents, np.full(2, label, np.int32)), atol=1e-5)
  assert numbers["classes"] == [[3, 8], [3, 8]]
  with pytest.raises(ConfigError, match="unconditional"):
    edit_runs.class_interpolate(gan, classes=None, num_steps=3, rows=1, seed=0)
  with pytest.raises(ConfigError, match="not among"):
    edit_runs.class_interpolate(cgan, classes=[0, 10], num_steps=3, rows=1, seed=0)


# Inpainting.

def test_masks():
  square = inpainting.square_mask(8, 8, 4, 1, 2)
  assert square.shape == (8, 8, 1) and float(jnp.sum(1 - square)) == 16
  assert float(jnp.sum(1 - square[1:5, 2:6])) == 16
  key = jax.random.key(0)
  pixels = inpainting.random_pixel_masks(key, jnp.arange(8), 16, 16, 0.3)
  np.testing.assert_array_equal(pixels[3], inpainting.random_pixel_masks(
      key, jnp.array([3]), 16, 16, 0.3)[0])     # An image's mask is its own.
  assert not np.array_equal(pixels[0], pixels[1])
  assert 0.15 < float(1 - pixels.mean()) < 0.45
  boxes = inpainting.random_box_masks(key, jnp.arange(8), 16, 16, 5)
  np.testing.assert_array_equal(jnp.sum(1 - boxes, axis=(1, 2, 3)), 25)
  with pytest.raises(ConfigError, match="does not fit"):
    inpaint_runs.make_masks(inpaint_runs.MaskSpec(size=8, top=25), 2, (28, 28, 1), 0)


def test_mask_files(tmp_path):
  pixels = np.zeros((28, 28), np.uint8)
  pixels[4:10, 5:9] = 255
  Image.fromarray(pixels).save(tmp_path / "mask.png")
  known = read_mask(str(tmp_path / "mask.png"), (28, 28, 1))
  assert known.shape == (28, 28, 1) and known.sum() == 28 * 28 - 24
  assert known[5, 6, 0] == 0 and known[0, 0, 0] == 1
  Image.fromarray(pixels[:20]).save(tmp_path / "small.png")
  with pytest.raises(ImageError, match="20x28"):
    read_mask(str(tmp_path / "small.png"), (28, 28, 1))
  Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "black.png")
  with pytest.raises(ImageError, match="no pixel missing"):
    read_mask(str(tmp_path / "black.png"), (28, 28, 1))


def test_masked_psnr_and_mean_fill_against_direct_formulas():
  x = jax.random.uniform(jax.random.key(0), (2, 4, 4, 3), minval=-1, maxval=1)
  y = jax.random.uniform(jax.random.key(1), (2, 4, 4, 3), minval=-1, maxval=1)
  known = jnp.ones((2, 4, 4, 1)).at[:, :2].set(0.0)
  mse = np.mean(((np.asarray(x) - np.asarray(y))[:, :2] / 2) ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(inpainting.masked_psnr(x, y, known), -10 * np.log10(mse),
                             rtol=1e-5)
  filled = inpainting.mean_fill(x, known)
  np.testing.assert_array_equal(filled[:, 2:], x[:, 2:])
  np.testing.assert_allclose(filled[:, 0, 0], np.asarray(x)[:, 2:].mean(axis=(1, 2)),
                             rtol=1e-5)


def test_vae_inpainting_clamps_known_pixels_and_optimisation_descends(vae):
  images, _ = _digits(vae, 8)
  known = inpaint_runs.make_masks(inpaint_runs.MaskSpec(kind="pixels", fraction=0.4),
                                  8, vae.image_shape, seed=0)
  weights = vae.weights

  def reconstruct(x):
    return vae.decode(weights, vae.encode(weights, x))

  iterated = jax.jit(lambda x, m: inpainting.iterate_inpaint(
      x, m, reconstruct=reconstruct, num_steps=3))(images, known)
  keep = known[..., 0] > 0.5
  np.testing.assert_array_equal(np.asarray(iterated)[keep], images[keep])
  assert not np.array_equal(np.asarray(iterated)[~keep], images[~keep])

  settings = inpainting.LatentOptimisation(num_steps=15, learning_rate=0.05)
  decode = lambda z: vae.decode(weights, z)
  z0 = jax.random.normal(jax.random.key(0), (8, vae.latent_dim))
  grads = jax.grad(lambda z: jnp.sum(inpainting.latent_loss(
      z, images, known, decode=decode, sigma=0.1)))(z0)
  assert np.all(np.isfinite(grads)) and float(jnp.abs(grads).max()) > 0
  result, z, history = jax.jit(lambda x, m, z: inpainting.optimize_inpaint(
      x, m, z, decode=decode, s=settings))(images, known, z0)
  assert history.shape == (16, 8) and z.shape == (8, vae.latent_dim)
  assert np.all(history[-1] < history[0])
  np.testing.assert_array_equal(np.asarray(result)[keep], images[keep])


def test_gan_masked_inversion_keeps_known_pixels_and_is_deterministic(gan, cgan):
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (4, *gan.image_shape)).astype(np.float32)
  spec = inpaint_runs.MaskSpec(kind="box", size=10)
  settings = inversion.ProjectorSettings(num_steps=4, feature_weight=0.0)
  run = lambda editable, labels: inpaint_runs.inpaint(
      editable, images, labels, spec, method=None, seed=3, num_steps=1,
      optimisation=inpainting.LatentOptimisation(), projector=settings)
  numbers, grids = run(gan, None)
  grid = grids["inpaint_invert"]
  assert grid.shape == (4, 4, *gan.image_shape)
  known = inpaint_runs.make_masks(spec, 4, gan.image_shape, 3)[..., 0] > 0.5
  np.testing.assert_array_equal(grid[:, 2][known], images[known])
  np.testing.assert_array_equal(grid, run(gan, None)[1]["inpaint_invert"])
  assert [s["method"] for s in numbers["scores"]] == ["mean_fill", "invert"]
  _, conditional = run(cgan, np.array([0, 1, 2, 3], np.int32))
  np.testing.assert_array_equal(conditional["inpaint_invert"][:, 2][known], images[known])
  with pytest.raises(ConfigError, match="extractor_workdir"):
    inpaint_runs.inpaint(gan, images, None, spec, method=None, seed=0, num_steps=1,
                         optimisation=inpainting.LatentOptimisation(),
                         projector=inversion.ProjectorSettings(num_steps=1))
  with pytest.raises(ConfigError, match="not for a gan"):
    inpaint_runs.inpaint(gan, images, None, spec, method="iterate", seed=0, num_steps=1,
                         optimisation=inpainting.LatentOptimisation(), projector=settings)


# The command.

def _tree_hash(directory: pathlib.Path) -> str:
  digest = hashlib.sha256()
  for path in sorted(p for p in directory.rglob("*") if p.is_file()):
    digest.update(str(path.relative_to(directory)).encode() + path.read_bytes())
  return digest.hexdigest()


def test_edit_inpaints_with_a_vae_into_out_dir_only(tiny_vae_run, tmp_path):
  before = _tree_hash(tiny_vae_run)
  options = EditOptions(rows=4, inpaint_steps=3,
                        optimisation=inpainting.LatentOptimisation(num_steps=10))
  result = run_edit(str(tiny_vae_run), out_dir=str(tmp_path / "out"), operation="inpaint",
                    options=options, seed=0)
  assert _tree_hash(tiny_vae_run) == before
  files = sorted(p.name for p in (tmp_path / "out").iterdir())
  assert files == ["edit.json", "inpaint_iterate.png", "inpaint_optimize.png"]
  with Image.open(tmp_path / "out" / "inpaint_iterate.png") as grid:
    assert grid.size == (4 * 30 + 2, 4 * 30 + 2)     # 4 columns, 4 rows of 28 px + padding.
  methods = [score["method"] for score in result["scores"]]
  assert methods == ["mean_fill", "one_pass", "full_reconstruction", "iterate", "optimize"]
  assert result["optimize_loss"]["last"] < result["optimize_loss"]["first"]
  assert result["mask"]["missing_fraction"] == pytest.approx(0.25)


def test_edit_refuses_bad_inputs_in_one_line(tiny_vae_run, tiny_cgan_run,
                                             tiny_classifier_run, tmp_path):
  out = str(tmp_path / "out")
  vae_run = str(tiny_vae_run)
  options = EditOptions(rows=1, inpaint_steps=1)
  edit = lambda workdir=vae_run, **kwargs: run_edit(
      workdir, out_dir=kwargs.pop("out_dir", out), options=kwargs.pop("options", options),
      **{"operation": "inpaint", **kwargs})
  with pytest.raises(ConfigError, match="'classifier' run"):
    edit(str(tiny_classifier_run))
  with pytest.raises(WorkdirError, match="inside the run"):
    edit(out_dir=str(tiny_vae_run / "edits"))
  (tmp_path / "a_file").write_text("x")
  with pytest.raises(WorkdirError, match="is a file"):
    edit(out_dir=str(tmp_path / "a_file"))
  with pytest.raises(ConfigError, match="unconditional"):
    edit(operation="class_interpolate")
  Image.fromarray(np.zeros((20, 28), np.uint8)).save(tmp_path / "small.png")
  Image.fromarray(np.full((28, 28, 3), [255, 0, 0], np.uint8)).save(tmp_path / "red.png")
  (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
  for name, message in (("small.png", "20x28"), ("red.png", "colour image"),
                        ("broken.png", "Cannot read"), ("missing.png", "does not exist")):
    with pytest.raises(ImageError, match=message):
      edit(image_paths=[str(tmp_path / name)])
  with pytest.raises(ImageError, match="20x28"):
    edit(options=EditOptions(mask=inpaint_runs.MaskSpec(kind="file"),
                             mask_file=str(tmp_path / "small.png")))
  with pytest.raises(ConfigError, match="mask_file"):
    edit(options=EditOptions(mask=inpaint_runs.MaskSpec(kind="file")))
  Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "digit.png")
  with pytest.raises(ConfigError, match="needs each image's class"):
    edit(str(tiny_cgan_run), image_paths=[str(tmp_path / "digit.png")])
  np.save(tmp_path / "direction.npy", np.array(["a", "b"]))
  with pytest.raises(ConfigError, match="finite numbers"):
    edit(operation="traverse", options=EditOptions(
        direction_file=str(tmp_path / "direction.npy")))
  with pytest.raises(ConfigError, match="Cannot read"):
    edit(operation="traverse", options=EditOptions(direction_file=str(tmp_path / "a_file")))
  assert not (tmp_path / "out").exists()


def test_run_py_edit_flag_errors_are_one_line(tiny_gan_run, tmp_path):
  cases = [["--psi=1,2"], ["--truncation_thresholds=0"], ["--path_classes=3"],
           ["--coordinates=a"], ["--mask_fraction=1.5"], []]
  for extra in cases:
    argv = [sys.executable, "run.py", "edit", f"--workdir={tiny_gan_run}",
            f"--out_dir={tmp_path / 'out'}", *extra]
    done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and lines[-1].startswith("error: "), (extra, done.stderr)
  assert not (tmp_path / "out").exists()
