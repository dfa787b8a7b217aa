"""Latent-path edits of a restored run: interpolation, traversals, truncation and class
interpolation, as grids (rows, columns, H, W, C) with the numbers that describe them.

Latents come from N(0, I) for a GAN (row r's from fold_in(key, r), so a row does not
depend on how many there are) and from the posterior means of real images for a VAE
(which are encoded; prior latents where no image is involved: truncation and class
interpolation). Conditional models take one class per row (drawn, or the images'
labels), and class weights along a class interpolation. Every decode is sharded over
the mesh (`editable.map_over_devices`).
"""

from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special

from cnnjax.editing import latent_paths
from cnnjax.editing.editable import Editable, map_over_devices
from cnnjax.errors import ConfigError

LATENT_STREAM, CLASS_STREAM, RESAMPLE_STREAM = 0, 1, 2
Grids = dict[str, np.ndarray]   # name -> (rows, columns, H, W, C) images in [-1, 1].


def decode(editable: Editable, latents_nz: np.ndarray,
           classes: Optional[np.ndarray] = None) -> np.ndarray:
  """Images (N, H, W, C) of latents (N, Z) and, if conditional, classes (N,) or class
  weights (N, K)."""
  if classes is None:
    return map_over_devices(editable.decode, editable.weights,
                            [np.asarray(latents_nz, np.float32)], editable.mesh)
  return map_over_devices(editable.decode, editable.weights,
                          [np.asarray(latents_nz, np.float32), np.asarray(classes)],
                          editable.mesh)


def encode(editable: Editable, images_nhwc: np.ndarray,
           classes: Optional[np.ndarray] = None) -> np.ndarray:
  """A VAE's posterior means (N, Z) of images."""
  if editable.encode is None:
    raise ConfigError(f"{editable.workdir} holds a {editable.kind}, which has no "
                      "encoder; real images are encoded by a VAE.")
  arrays = [np.asarray(images_nhwc, np.float32)]
  arrays += [] if classes is None else [np.asarray(classes)]
  return map_over_devices(editable.encode, editable.weights, arrays, editable.mesh)


def prior_latents(seed: int, rows: int, shape: Sequence[int]) -> np.ndarray:
  """(rows, *shape) N(0, 1) latents, row r from fold_in(fold_in(key, LATENT), r)."""
  key = jax.random.fold_in(jax.random.key(seed), LATENT_STREAM)
  return np.asarray(jax.vmap(lambda r: jax.random.normal(jax.random.fold_in(key, r),
                                                         tuple(shape)))(jnp.arange(rows)))


def row_classes(editable: Editable, seed: int, rows: int) -> Optional[np.ndarray]:
  """One drawn class per row for a conditional model, else None."""
  if not editable.num_classes:
    return None
  key = jax.random.fold_in(jax.random.key(seed), CLASS_STREAM)
  return np.asarray(jax.vmap(lambda r: jax.random.randint(
      jax.random.fold_in(key, r), (), 0, editable.num_classes))(jnp.arange(rows)))


def _repeat(classes_r: Optional[np.ndarray], columns: int) -> Optional[np.ndarray]:
  return None if classes_r is None else np.repeat(classes_r, columns, axis=0)


def _unit_distance(a, b, axis) -> np.ndarray:
  """RMS difference in [0, 1] pixel units (images in [-1, 1])."""
  return np.sqrt(np.mean(((a - b) / 2.0) ** 2, axis=axis))


def interpolate(editable: Editable, *, method: str, num_anchors: int, num_steps: int,
                rows: int, seed: int, images_nhwc: Optional[np.ndarray] = None,
                labels_n: Optional[np.ndarray] = None) -> tuple[dict[str, Any], Grids]:
  """Paths through `num_anchors` latents per row (linear or slerp).

  A GAN interpolates prior latents (a drawn class per row if conditional); a VAE
  interpolates the encodings of `rows * num_anchors` real images (taken in order, with
  their labels' one-hot weights interpolated too for a CVAE), its rows framed by the
  first and last input.
  """
  if editable.kind == "vae":
    anchors = encode(editable, images_nhwc, labels_n).reshape(rows, num_anchors, -1)
  else:
    anchors = prior_latents(seed, rows, (num_anchors, editable.latent_dim))
  latents_rpz = np.asarray(jax.vmap(lambda a: latent_paths.path(a, num_steps, method))(
      jnp.asarray(anchors)))
  columns = latents_rpz.shape[1]
  if editable.kind == "vae" and labels_n is not None:
    weights = jax.nn.one_hot(labels_n.reshape(rows, num_anchors), editable.num_classes)
    classes = np.asarray(jax.vmap(lambda w: latent_paths.path(w, num_steps, "linear"))(
        weights)).reshape(rows * columns, -1)
  else:
    classes = _repeat(row_classes(editable, seed, rows), columns)
  images = decode(editable, latents_rpz.reshape(rows * columns, -1), classes)
  images = images.reshape(rows, columns, *images.shape[1:])
  norms = np.linalg.norm(latents_rpz, axis=-1)
  frames = _unit_distance(images[:, 1:], images[:, :-1], axis=(2, 3, 4))
  numbers = {
      "latent_norm_at_anchors": float(np.mean(norms[:, ::num_steps - 1])),
      "latent_norm_min_along_path": float(np.mean(np.min(norms, axis=1))),
      "mean_frame_distance": float(np.mean(frames)),
      "max_frame_distance": float(np.mean(np.max(frames, axis=1))),
  }
  if editable.kind == "vae":
    inputs = images_nhwc.reshape(rows, num_anchors, *images.shape[2:])
    images = np.concatenate([inputs[:, :1], images, inputs[:, -1:]], axis=1)
  return numbers, {f"interpolate_{method}": images}


def traverse(editable: Editable, *, coordinates: Sequence[int],
             direction_z: Optional[np.ndarray], span: float, num_steps: int, rows: int,
             seed: int, images_nhwc: Optional[np.ndarray] = None,
             labels_n: Optional[np.ndarray] = None) -> tuple[dict[str, Any], Grids]:
  """z + s * d for s from -span to span: one row per (latent, direction), the latents
  prior samples (GAN) or encodings of real images (VAE, each row led by its input);
  the directions the unit vectors of `coordinates`, or `direction_z` (normalised)."""
  latent_dim = editable.latent_dim
  if direction_z is not None:
    if np.shape(direction_z) != (latent_dim,) or not np.any(direction_z):
      raise ConfigError(f"The direction has shape {np.shape(direction_z)}; the run's "
                        f"latents need a nonzero ({latent_dim},) vector.")
    directions = np.asarray(latent_paths.unit(jnp.asarray(direction_z, jnp.float32)))[None]
  else:
    bad = [c for c in coordinates if not 0 <= c < latent_dim]
    if bad:
      raise ConfigError(f"Latent coordinates {bad} are outside the run's {latent_dim} "
                        f"coordinates 0..{latent_dim - 1}.")
    directions = np.asarray(latent_paths.coordinate_directions(
        jnp.asarray(coordinates), latent_dim))
  if editable.kind == "vae":
    anchors = encode(editable, images_nhwc, labels_n)
    classes_r = labels_n
  else:
    anchors = prior_latents(seed, rows, (latent_dim,))
    classes_r = row_classes(editable, seed, rows)
  offsets = jnp.linspace(-span, span, num_steps)
  latents = jax.vmap(lambda z: jax.vmap(lambda d: latent_paths.traverse(z, d, offsets))(
      jnp.asarray(directions)))(jnp.asarray(anchors))           # (rows, D, S, Z)
  num_directions = len(directions)
  classes = _repeat(classes_r, num_directions * num_steps)
  images = decode(editable, np.asarray(latents).reshape(-1, latent_dim), classes)
  images = images.reshape(rows, num_directions, num_steps, *images.shape[1:])
  change = _unit_distance(images[:, :, -1], images[:, :, 0], axis=(2, 3, 4)).mean(0)
  names = ["direction"] if direction_z is not None else [int(c) for c in coordinates]
  numbers = {"offsets": [float(o) for o in offsets], "directions": names,
             "end_to_end_change": [float(c) for c in change]}
  if editable.kind == "vae":
    inputs = np.broadcast_to(images_nhwc[:, None, None],
                             (rows, num_directions, 1, *images.shape[3:]))
    images = np.concatenate([inputs, images], axis=2)
  return numbers, {"traverse": images.reshape(rows * num_directions, *images.shape[2:])}


def _diversity(images_rnhwc: np.ndarray) -> list[float]:
  """Per column: the mean over pixels of the std across rows, in [0, 1] units."""
  return [float(v) for v in np.mean(np.std(images_rnhwc / 2.0, axis=0), axis=(1, 2, 3))]


def truncate(editable: Editable, *, psis: Sequence[float], thresholds: Sequence[float],
             rows: int, seed: int) -> tuple[dict[str, Any], Grids]:
  """The truncation trick on prior latents: one row per latent, one column per psi
  (z <- psi z, towards the mean latent 0); with thresholds, a second grid whose first
  column is untruncated and the others resample every |z_i| > threshold."""
  latents_rz = prior_latents(seed, rows, (editable.latent_dim,))
  classes_r = row_classes(editable, seed, rows)
  psi_p = jnp.asarray(psis, jnp.float32)
  truncated = np.asarray(jax.vmap(lambda z: jax.vmap(
      lambda p: latent_paths.truncate(z, p))(psi_p))(jnp.asarray(latents_rz)))
  images = decode(editable, truncated.reshape(-1, editable.latent_dim),
                  _repeat(classes_r, len(psis)))
  images = images.reshape(rows, len(psis), *images.shape[1:])
  numbers = {"psi": [float(p) for p in psis],
             "latent_norm": [float(n) for n in np.linalg.norm(truncated, axis=-1).mean(0)],
             "diversity": _diversity(images)}
  grids = {"truncate_psi": images}
  if thresholds:
    key = jax.random.fold_in(jax.random.key(seed), RESAMPLE_STREAM)
    thresholds_t = jnp.asarray(thresholds, jnp.float32)
    resampled = jax.jit(jax.vmap(lambda r, z: jax.vmap(
        lambda j, t: latent_paths.resample_truncated(
            jax.random.fold_in(jax.random.fold_in(key, r), j), z, t))(
                jnp.arange(len(thresholds)), thresholds_t)))(
                    jnp.arange(rows), jnp.asarray(latents_rz))
    latents = np.concatenate([latents_rz[:, None], np.asarray(resampled)], axis=1)
    images = decode(editable, latents.reshape(-1, editable.latent_dim),
                    _repeat(classes_r, len(thresholds) + 1))
    images = images.reshape(rows, len(thresholds) + 1, *images.shape[1:])
    numbers["resample"] = {
        "threshold": [None] + [float(t) for t in thresholds],
        "max_abs_latent": [float(v) for v in np.abs(latents).max(axis=(0, 2))],
        "diversity": _diversity(images)}
    grids["truncate_resample"] = images
  return numbers, grids


def class_interpolate(editable: Editable, *, classes: Optional[Sequence[int]],
                      num_steps: int, rows: int, seed: int,
                      classify=None) -> tuple[dict[str, Any], Grids]:
  """One prior latent per row decoded with class weights mixed from class to class
  (`classes`, or row r from class r mod K to r + 1 mod K); `classify`, images ->
  logits (N, K) of a classifier of the run's classes, measures the path."""
  num_classes = editable.num_classes
  if not num_classes:
    raise ConfigError(f"{editable.workdir} holds an unconditional {editable.kind}: class "
                      "interpolation needs a class-conditional run (configs/cgan.py, or "
                      "configs/vae.py:cvae).")
  if classes is not None:
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
      raise ConfigError(f"Classes {bad} are not among the run's {num_classes} classes "
                        f"0..{num_classes - 1}.")
    anchors_rk = np.tile(np.asarray(classes), (rows, 1))
  else:
    anchors_rk = np.stack([np.arange(rows) % num_classes,
                           (np.arange(rows) + 1) % num_classes], axis=1)
  weights = np.asarray(jax.vmap(lambda c: latent_paths.class_weight_path(
      c, num_classes, num_steps))(jnp.asarray(anchors_rk)))        # (rows, P, K)
  columns = weights.shape[1]
  latents = np.repeat(prior_latents(seed, rows, (editable.latent_dim,)), columns, axis=0)
  images = decode(editable, latents, weights.reshape(rows * columns, num_classes))
  numbers: dict[str, Any] = {"classes": anchors_rk.tolist(),
                             "weights_of_first_row": weights[0].round(4).tolist()}
  if classify is not None:
    probs = scipy.special.softmax(np.asarray(classify(images), np.float64), -1)
    probs = probs.reshape(rows, columns, -1)
    take = lambda k: np.take_along_axis(probs, anchors_rk[:, k][:, None, None], 2)[..., 0]
    numbers["probability_of_first_class"] = [float(p) for p in take(0).mean(0)]
    numbers["probability_of_last_class"] = [float(p) for p in take(-1).mean(0)]
    anchor_columns = np.arange(anchors_rk.shape[1]) * (num_steps - 1)
    predicted = probs[:, anchor_columns].argmax(-1)
    numbers["anchor_accuracy"] = float(np.mean(predicted == anchors_rk))
  return numbers, {"class_interpolate": images.reshape(rows, columns, *images.shape[1:])}
