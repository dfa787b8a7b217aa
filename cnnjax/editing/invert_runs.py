"""`run.py invert`: GAN inversion of real images by optimisation, by a trained encoder,
or both (hybrid), scored and timed, into an output directory.

- optimize: StyleGAN2's projector on z from z0 = 0 (the prior's mean), pixel MSE plus
  the feature distance of the project's classifier (`cnnjax.editing.inversion`);
- encoder: z = E(x) of a `gan_encoder` run, one forward pass (E(x, y) with each image's
  class y for a class-conditional GAN);
- hybrid: z0 = E(x), then the projector with the in-domain regulariser
  `encoder_weight * ||z - E(G(z))||^2` (Zhu et al. 2020).

Every image has its own projector key (`fold_in(key, index)`); the batch is sharded
over every device. Each method's program is compiled before it is timed, so
`seconds_per_image` is the inversion alone and `compile_seconds` is reported apart.
"""

import dataclasses
import os
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from cnnjax.editing import inversion
from cnnjax.editing.editable import (Editable, check_out_dir, class_inputs,
                                     open_editable, read_editable, read_inputs)
from cnnjax.editing.inpaint_runs import bind_features, projector_features
from cnnjax.errors import ConfigError
from cnnjax.io.images import make_grid, save_png
from cnnjax.io.workdir import write_json_atomic
from cnnjax.metrics.paired import paired_scores
from cnnjax.runs.gan_encoder import open_encoder
from cnnjax.train import parallel

METHODS = ("optimize", "encoder", "hybrid")
NEEDS_ENCODER = ("encoder", "hybrid")
RESULT_FILE = "invert.json"
GRID_FILE = "invert.png"
PROJECTOR_STREAM = 4          # The seed's stream of the projector's noise (as inpainting).
HYBRID_ENCODER_WEIGHT = 2.0   # In-domain inversion's lambda_dom, when not given.


@dataclasses.dataclass(frozen=True)
class BoundEncoder:
  """A `gan_encoder` run: its weights (replicated) and `encode(weights, images, labels)`
  (labels (N,) for a class-conditional generator, else None)."""
  workdir: str
  step: int
  weights: Any
  encode: Callable[[Any, jax.Array, Optional[jax.Array]], jax.Array]


def _same_arrays(a: Any, b: Any) -> bool:
  leaves_a, tree_a = jax.tree.flatten(jax.device_get(a))
  leaves_b, tree_b = jax.tree.flatten(jax.device_get(b))
  return tree_a == tree_b and all(
      np.shape(x) == np.shape(y) and np.array_equal(x, y) for x, y in zip(leaves_a, leaves_b))


def bind_encoder(encoder_workdir: str, editable: Editable) -> BoundEncoder:
  """Restores an encoder run and checks it inverts exactly `editable`'s generator.

  Raises:
    WorkdirError, ConfigError, CheckpointError: no encoder there, or one trained
      against another generator (the message names the GAN run and step it knows).
  """
  run = open_encoder(encoder_workdir, mesh=editable.mesh)
  if not _same_arrays(run.state.generator, editable.weights):
    info = run.data_info
    raise ConfigError(
        f"The encoder in {run.workdir} was trained against step "
        f"{int(jax.device_get(run.state.generator_step))} of {info['generator_workdir']}, "
        f"not against step {editable.step} of {editable.workdir}: pass that run and "
        "--step, or train an encoder for this generator.")
  return BoundEncoder(workdir=run.workdir, step=run.step,
                      weights=parallel.put_replicated(run.state.params, editable.mesh),
                      encode=run.program.encode)


def _compiled_map(function: Callable, replicated: Any, arrays: Sequence[np.ndarray], mesh
                  ) -> tuple[Any, float, float]:
  """`function(replicated, *arrays)` sharded over `mesh` (batch padded to the devices):
  (outputs without the padding, compile seconds, run seconds)."""
  num = len(arrays[0])
  size = -(-num // mesh.size) * mesh.size
  sharding = parallel.data_sharded(mesh)
  padded = [jax.device_put(np.pad(np.asarray(a), ((0, size - num),) +
                                  ((0, 0),) * (np.ndim(a) - 1)), sharding) for a in arrays]
  start = time.perf_counter()
  compiled = jax.jit(function, out_shardings=sharding).lower(replicated, *padded).compile()
  compile_seconds = time.perf_counter() - start
  start = time.perf_counter()
  outputs = jax.block_until_ready(compiled(replicated, *padded))
  run_seconds = time.perf_counter() - start
  outputs = jax.tree.map(lambda out: np.asarray(jax.device_get(out))[:num], outputs)
  return outputs, compile_seconds, run_seconds


def _projector(key, targets, z0, indices, labels, *, generate, features, encode,
               settings: inversion.ProjectorSettings):
  """The projector on whole images; a conditional generator gets each image's class."""
  known = jnp.ones(targets.shape[:-1] + (1,), targets.dtype)

  def one(index, target, known_hw1, z0_d, label):
    classes = lambda batch: (None if label is None
                             else jnp.broadcast_to(label, batch.shape[:1]))
    bound = lambda z: generate(z, classes(z))
    bound_encode = None if encode is None else (lambda x: encode(x, classes(x)))
    return inversion.project_one(jax.random.fold_in(key, index), target, known_hw1, z0_d,
                                 generate=bound, features=features, encode=bound_encode,
                                 s=settings)
  if labels is None:
    return jax.vmap(lambda i, t, k, z: one(i, t, k, z, None))(indices, targets, known, z0)
  return jax.vmap(one)(indices, targets, known, z0, labels)


def invert_images(editable: Editable, images_nhwc: np.ndarray,
                  labels_n: Optional[np.ndarray], *, methods: Sequence[str],
                  projector: inversion.ProjectorSettings, seed: int,
                  encoder: Optional[BoundEncoder] = None,
                  features: Optional[tuple[Any, Callable]] = None
                  ) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
  """Inverts real images with each method; scores and times each.

  Returns:
    (one dict of numbers per method, {method: reconstructions G(z) (N, H, W, C)}).

  Raises:
    ConfigError: encoder methods without an encoder, a feature weight without features.
  """
  if any(method in NEEDS_ENCODER for method in methods) and encoder is None:
    raise ConfigError("--inversion=encoder and hybrid need --encoder_workdir=DIR (a "
                      "gan_encoder run, configs/gan_encoder.py).")
  feature_weights, feature_fn = projector_features(
      features, needed=projector.feature_weight > 0 and any(m != "encoder" for m in methods))
  key = jax.random.fold_in(jax.random.key(seed), PROJECTOR_STREAM)
  num = len(images_nhwc)
  images_nhwc = np.asarray(images_nhwc, np.float32)
  arrays = [images_nhwc, np.arange(num, dtype=np.int32)] + (
      [] if labels_n is None else [labels_n])
  encoder_weights = None if encoder is None else encoder.weights
  weights = (editable.weights, encoder_weights, feature_weights)

  def invert(method, w, x, index, *y):
    gen_w, enc_w, feat_w = w
    label = y[0] if y else None
    generate = lambda z, classes: editable.decode(gen_w, z, classes)
    encode = None if enc_w is None else (
        lambda images, classes: encoder.encode(enc_w, images, classes))
    if method == "encoder":
      z = encode(x, label)
      return z, generate(z, label), jnp.zeros((x.shape[0],))
    z0 = (jnp.zeros((x.shape[0], editable.latent_dim)) if method == "optimize"
          else encode(x, label))
    settings = projector if method == "hybrid" else dataclasses.replace(
        projector, encoder_weight=0.0)
    z, loss = _projector(key, x, z0, index, label, generate=generate,
                         features=lambda images: feature_fn(feat_w, images),
                         encode=encode if method == "hybrid" else None, settings=settings)
    return z, generate(z, label), loss

  target_features = None
  if feature_weights is not None:
    target_features, _, _ = _compiled_map(lambda w, x: feature_fn(w, x), feature_weights,
                                          [images_nhwc], editable.mesh)
  numbers, outputs = [], {}
  for method in methods:
    (latents, recon, loss), compile_s, run_s = _compiled_map(
        lambda w, *a, m=method: invert(m, w, *a), weights, arrays, editable.mesh)
    scores = paired_scores(recon, images_nhwc)
    entry = {"method": method, "psnr": scores["psnr"], "ssim": scores["ssim"],
             "l1": scores["l1"], "latent_norm": float(np.mean(np.linalg.norm(latents, axis=1))),
             "seconds_per_image": run_s / num, "compile_seconds": compile_s}
    if method != "encoder":
      entry["projector_loss"] = float(np.mean(loss))
    if target_features is not None:
      recon_features, _, _ = _compiled_map(lambda w, x: feature_fn(w, x), feature_weights,
                                           [recon], editable.mesh)
      entry["feature_distance"] = float(np.mean((recon_features - target_features) ** 2))
    numbers.append(entry)
    outputs[method] = recon
  return numbers, outputs


def run_invert(workdir: str, *, out_dir: str, methods: Sequence[str],
               projector: inversion.ProjectorSettings, num_images: int = 16,
               encoder_workdir: Optional[str] = None,
               image_paths: Optional[Sequence[str]] = None, split: str = "test",
               extractor_workdir: Optional[str] = None, seed: int = 0,
               step: Optional[int] = None, grid_rows: int = 16) -> dict[str, Any]:
  """Inverts real images into a GAN run's latent space; writes `out_dir/invert.json`
  (numbers per method, the settings) and `out_dir/invert.png` (rows: target | each
  method's G(z), the first `grid_rows` images).

  Raises:
    ConfigError, WorkdirError, CheckpointError, ImageError, DatasetError: bad input, as
      one line, before anything is written.
  """
  unknown = [method for method in methods if method not in METHODS]
  if unknown or not methods:
    raise ConfigError(f"Unknown --inversion={','.join(methods)!s}: use one or more of "
                      f"{', '.join(METHODS)} (comma-separated).")
  spec = read_editable(workdir)
  if spec.kind.name != "gan":
    raise ConfigError(f"{spec.workdir} holds a {spec.kind.name} run: inversion is for "
                      "GAN runs (a VAE encodes its images: run.py edit).")
  out_dir = check_out_dir(out_dir, spec.workdir)
  if encoder_workdir:
    check_out_dir(out_dir, encoder_workdir)
  if any(method in NEEDS_ENCODER for method in methods) and not encoder_workdir:
    raise ConfigError("--inversion=encoder and hybrid need --encoder_workdir=DIR (a "
                      "gan_encoder run, configs/gan_encoder.py).")
  images, labels = read_inputs(spec, image_paths=image_paths, split=split,
                               count=num_images)
  labels = class_inputs(spec, labels)
  editable = open_editable(spec, step)
  encoder = bind_encoder(encoder_workdir, editable) if encoder_workdir else None
  features = (bind_features(extractor_workdir, editable.image_shape[-1])
              if extractor_workdir else None)
  numbers, outputs = invert_images(editable, images, labels, methods=methods,
                                   projector=projector, seed=seed, encoder=encoder,
                                   features=features)
  os.makedirs(out_dir, exist_ok=True)
  rows = min(grid_rows, len(images))
  columns = [images[:rows]] + [outputs[method][:rows] for method in methods]
  grid = np.stack(columns, axis=1)
  save_png(os.path.join(out_dir, GRID_FILE),
           make_grid(grid.reshape(-1, *grid.shape[2:]), num_cols=len(columns)))
  result = {"workdir": spec.workdir, "step": editable.step, "seed": seed,
            "encoder_workdir": None if encoder is None else encoder.workdir,
            "encoder_step": None if encoder is None else encoder.step,
            "extractor_workdir": extractor_workdir,
            "images": list(image_paths) if image_paths else None,
            "split": None if image_paths else split, "num_images": len(images),
            "num_devices": editable.mesh.size, "projector": dataclasses.asdict(projector),
            "grid": GRID_FILE, "grid_columns": ["target", *methods], "methods": numbers}
  write_json_atomic(os.path.join(out_dir, RESULT_FILE), result)
  logging.info("invert %s: %s", spec.workdir, "; ".join(
      f"{n['method']} PSNR {n['psnr']:.2f} dB SSIM {n['ssim']:.3f} "
      f"{n['seconds_per_image'] * 1e3:.2f} ms/image" for n in numbers))
  return result
