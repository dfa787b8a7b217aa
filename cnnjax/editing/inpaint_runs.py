"""Inpainting real images with a restored run, measured inside the mask.

A VAE fills the missing pixels by iterated reconstruction with the known pixels clamped
and by latent optimisation (`cnnjax.editing.inpainting`); a GAN by masked inversion
(the projector of `cnnjax.editing.inversion` on the known pixels, then the composite).
Each method's PSNR inside the mask is reported beside the mean-fill baseline and, for a
VAE, its one-pass reconstruction of the mean-filled input and its reconstruction of the
whole true image (which sees the missing pixels: a ceiling, not a competitor); dm-pix
PSNR / SSIM of the whole composites too.
"""

import dataclasses
import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.editing import inpainting, inversion
from cnnjax.editing.editable import Editable, map_over_devices
from cnnjax.errors import ConfigError
from cnnjax.metrics.paired import paired_scores
from cnnjax.runs.opening import open_run
from cnnjax.train import parallel

MASKS = ("square", "pixels", "box", "file")
VAE_METHODS, GAN_METHODS = ("iterate", "optimize"), ("invert",)
MASK_STREAM, PROJECTOR_STREAM = 3, 4


@dataclasses.dataclass(frozen=True)
class MaskSpec:
  """Which pixels are missing: a `kind` of `MASKS`, the square's or box's `size`
  (default: half the image side), the square's `top`/`left` (default: centred), the
  missing `fraction` of "pixels", or a known mask (H, W, 1) read from a file."""
  kind: str = "square"
  size: Optional[int] = None
  top: Optional[int] = None
  left: Optional[int] = None
  fraction: float = 0.5
  known_hw1: Optional[np.ndarray] = None


def make_masks(spec: MaskSpec, num: int, image_shape, seed: int) -> np.ndarray:
  """Known masks (num, H, W, 1); random kinds use fold_in(key, image index).

  Raises:
    ConfigError: a square or box that does not fit in the image.
  """
  height, width = image_shape[:2]
  size = spec.size if spec.size is not None else min(height, width) // 2
  if spec.kind in ("square", "box"):
    top = 0 if spec.top is None else spec.top
    left = 0 if spec.left is None else spec.left
    if not 0 < size or top + size > height or left + size > width:
      raise ConfigError(f"A {size} px mask at top {top}, left {left} does not fit in "
                        f"the run's {height}x{width} images.")
  key = jax.random.fold_in(jax.random.key(seed), MASK_STREAM)
  indices = jnp.arange(num)
  if spec.kind == "square":
    mask = inpainting.square_mask(height, width, size, spec.top, spec.left)
    masks = jnp.broadcast_to(mask, (num, height, width, 1))
  elif spec.kind == "pixels":
    masks = inpainting.random_pixel_masks(key, indices, height, width, spec.fraction)
  elif spec.kind == "box":
    masks = inpainting.random_box_masks(key, indices, height, width, size)
  else:
    masks = np.broadcast_to(spec.known_hw1, (num, height, width, 1))
  return np.asarray(masks, np.float32)


def bind_features(extractor_workdir: str, channels: int) -> tuple[Any, Callable]:
  """A classifier run's penultimate features as a pure function of its weights:
  (weights replicated over the mesh, features(weights, images) -> (B, D)).

  Raises:
    WorkdirError, CheckpointError, ConfigError: no classifier there, or one trained on
      images with another number of channels.
  """
  run = open_run(extractor_workdir, kinds=("classifier",),
                 hint="train one with `python run.py --config=configs/classifier.py "
                 "--workdir=DIR`")
  program = run.program
  if program.channels != channels:
    raise ConfigError(f"The classifier in {run.workdir} reads {program.channels}-channel "
                      f"images but the run makes {channels}-channel ones.")
  size = program.image_size
  weights = {"params": run.state.model.params, "batch_stats": run.state.model.batch_stats}

  def features(variables, images_bhwc):
    batch, height, width, c = images_bhwc.shape
    if (height, width) != (size, size):
      images_bhwc = jax.image.resize(images_bhwc, (batch, size, size, c), "bilinear")
    return program.model.apply(variables, images_bhwc, train=False)[1]
  return parallel.put_replicated(weights, program.mesh), features


def projector_features(features: Optional[tuple[Any, Callable]], *, needed: bool,
                       purpose: str = "The projector's") -> tuple[Any, Callable]:
  """`features` (a `bind_features` pair), or, when the perceptual term is weighted 0,
  the pixels standing in so that the projector's signature is met.

  Raises:
    ConfigError: the term is weighted but no classifier was given.
  """
  if features is not None:
    return features
  if needed:
    raise ConfigError(f"{purpose} perceptual term needs a classifier run: pass "
                      "--extractor_workdir=DIR (configs/classifier.py), or "
                      "--feature_weight=0 for pixels only.")
  return None, lambda _, x: x.reshape(x.shape[0], -1)


def _scores(name: str, outputs, targets, known) -> dict[str, float]:
  psnr = np.asarray(inpainting.masked_psnr(jnp.asarray(outputs), jnp.asarray(targets),
                                           jnp.asarray(known)))
  whole = paired_scores(outputs, targets)
  return {"method": name, "psnr_in_mask": float(np.mean(psnr)),
          "psnr_in_mask_std": float(np.std(psnr)), "psnr": whole["psnr"],
          "ssim": whole["ssim"]}


def _vae_inpaint(editable: Editable, images, known, classes, *, methods, num_steps,
                 optimisation: inpainting.LatentOptimisation) -> dict[str, Any]:
  arrays = [images, known] + ([] if classes is None else [classes])

  def reconstruct(weights, x, y):
    return editable.decode(weights, editable.encode(weights, x, y), y)

  def run(fn):
    return map_over_devices(lambda w, x, m, *y: fn(w, x, m, y[0] if y else None),
                            editable.weights, arrays, editable.mesh)

  outputs = {"one_pass": run(lambda w, x, m, y: inpainting.iterate_inpaint(
      x, m, reconstruct=functools.partial(reconstruct, w, y=y), num_steps=1))}
  outputs["full_reconstruction"] = run(lambda w, x, m, y: reconstruct(w, x, y))
  history = None
  if "iterate" in methods:
    outputs["iterate"] = run(lambda w, x, m, y: inpainting.iterate_inpaint(
        x, m, reconstruct=functools.partial(reconstruct, w, y=y), num_steps=num_steps))
  if "optimize" in methods:
    def optimize(w, x, m, y):
      z0 = editable.encode(w, inpainting.mean_fill(x, m), y)
      result, _, losses = inpainting.optimize_inpaint(
          x, m, z0, decode=lambda z: editable.decode(w, z, y), s=optimisation)
      return result, losses.T
    outputs["optimize"], history = run(optimize)
  return {"outputs": outputs, "history": history}


def _gan_inpaint(editable: Editable, images, known, classes, *, seed: int,
                 settings: inversion.ProjectorSettings,
                 features: Optional[tuple[Any, Callable]]) -> dict[str, Any]:
  feature_weights, feature_fn = projector_features(
      features, needed=settings.feature_weight > 0, purpose="GAN inpainting's")
  key = jax.random.fold_in(jax.random.key(seed), PROJECTOR_STREAM)
  num = len(images)
  arrays = [images, known, np.zeros((num, editable.latent_dim), np.float32),
            np.arange(num, dtype=np.int32)] + ([] if classes is None else [classes])

  def invert(weights, x, m, z0, index, *y):
    gen_weights, clf_weights = weights
    composite, _, loss = inpainting.gan_inpaint(
        key, x, m, z0, index, generate=functools.partial(editable.decode, gen_weights),
        features=functools.partial(feature_fn, clf_weights), s=settings,
        labels_n=y[0] if y else None)
    return composite, loss

  composite, loss = map_over_devices(invert, (editable.weights, feature_weights), arrays,
                                     editable.mesh)
  return {"outputs": {"invert": composite}, "projector_loss": loss}


def inpaint(editable: Editable, images_nhwc: np.ndarray, labels_n: Optional[np.ndarray],
            mask: MaskSpec, *, method: Optional[str], seed: int, num_steps: int,
            optimisation: inpainting.LatentOptimisation,
            projector: inversion.ProjectorSettings,
            features: Optional[tuple[Any, Callable]] = None
            ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """Fills the masked pixels of real images and scores every method inside the mask.

  Args:
    editable: the GAN or VAE.
    images_nhwc: the true images; labels_n: their classes (conditional runs).
    mask: which pixels are missing.
    method: one of `VAE_METHODS` / `GAN_METHODS`, or None for all of the run's kind.
    seed: seeds random masks and the projector's noise.
    num_steps: rounds of iterated reconstruction.
    optimisation: latent optimisation's settings (VAE).
    projector: the projector's settings (GAN).
    features: `bind_features` of a classifier, for the GAN's perceptual term.

  Returns:
    (numbers, grids name -> (N, 4, H, W, C): input | mask | result | truth).

  Raises:
    ConfigError: a method of the other kind of run.
  """
  allowed = VAE_METHODS if editable.kind == "vae" else GAN_METHODS
  if method is not None and method not in allowed:
    raise ConfigError(f"--inpaint_method={method} is not for a {editable.kind} run: use "
                      f"one of {', '.join(allowed)}.")
  methods = allowed if method is None else (method,)
  known = make_masks(mask, len(images_nhwc), images_nhwc.shape[1:], seed)
  images_nhwc = np.asarray(images_nhwc, np.float32)
  if editable.kind == "vae":
    result = _vae_inpaint(editable, images_nhwc, known, labels_n, methods=methods,
                          num_steps=num_steps, optimisation=optimisation)
  else:
    result = _gan_inpaint(editable, images_nhwc, known, labels_n, seed=seed,
                          settings=projector, features=features)
  outputs = result["outputs"]
  baseline = np.asarray(inpainting.mean_fill(jnp.asarray(images_nhwc), jnp.asarray(known)))
  scores = [_scores("mean_fill", baseline, images_nhwc, known)]
  scores += [_scores(name, out, images_nhwc, known) for name, out in outputs.items()]
  numbers: dict[str, Any] = {
      "mask": {"kind": mask.kind, "size": mask.size, "top": mask.top, "left": mask.left,
               "fraction": mask.fraction,
               "missing_fraction": float(1.0 - known.mean())},
      "num_images": len(images_nhwc), "methods": list(methods), "scores": scores}
  if result.get("history") is not None:
    losses = result["history"].mean(0)
    numbers["optimize_loss"] = {"first": float(losses[0]), "last": float(losses[-1])}
  if result.get("projector_loss") is not None:
    numbers["projector_loss"] = float(np.mean(result["projector_loss"]))
  masked_input = np.where(known > 0.5, images_nhwc, 0.0)
  mask_image = np.broadcast_to(1.0 - 2.0 * known, images_nhwc.shape)
  grids = {f"inpaint_{name}": np.stack([masked_input, mask_image, outputs[name],
                                        images_nhwc], axis=1) for name in methods}
  return numbers, grids
