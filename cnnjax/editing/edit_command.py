"""`run.py edit`: one editing operation on a GAN or VAE run, into an output directory.

Every check that needs no restored weights comes first (the run's kind, the output
directory, the user's images, mask and direction files), so bad input costs no
compilation; then the run is restored read-only, the operation runs, and its grids
(PNG, one row per latent or image) and `edit.json` are written into `out_dir` only.
"""

import dataclasses
import os
from typing import Any, Optional, Sequence

import numpy as np
from absl import logging

from cnnjax.editing import edit_runs, inpaint_runs, inpainting, inversion
from cnnjax.editing.editable import (check_out_dir, class_inputs, is_conditional,
                                     open_editable, read_editable, read_inputs, read_mask)
from cnnjax.errors import ConfigError
from cnnjax.io.images import make_grid, save_png
from cnnjax.io.workdir import write_json_atomic

OPERATIONS = ("interpolate", "traverse", "truncate", "class_interpolate", "inpaint")
RESULT_FILE = "edit.json"


@dataclasses.dataclass(frozen=True)
class EditOptions:
  """The settings of every operation (each reads its own; see `run.py edit --help`)."""
  interpolation: str = "slerp"
  num_anchors: int = 2
  path_steps: int = 8
  rows: int = 8
  coordinates: Sequence[int] = (0, 1, 2, 3)
  direction_file: Optional[str] = None
  span: float = 3.0
  psis: Sequence[float] = (1.0, 0.8, 0.6, 0.4, 0.2, 0.0)
  thresholds: Sequence[float] = (2.0, 1.0, 0.5)
  classes: Optional[Sequence[int]] = None
  mask: inpaint_runs.MaskSpec = inpaint_runs.MaskSpec()
  mask_file: Optional[str] = None
  inpaint_method: Optional[str] = None
  inpaint_steps: int = 20
  optimisation: inpainting.LatentOptimisation = inpainting.LatentOptimisation()
  projector: inversion.ProjectorSettings = inversion.ProjectorSettings()


def _read_direction(path: str) -> np.ndarray:
  try:
    direction = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as error:
    raise ConfigError(f"Cannot read the direction {path} as a .npy array "
                      f"({type(error).__name__}): save one with numpy.save.") from None
  if not np.issubdtype(direction.dtype, np.number) or not np.all(np.isfinite(direction)):
    raise ConfigError(f"The direction {path} is not an array of finite numbers.")
  return np.asarray(direction, np.float32)


def _images_needed(operation: str, options: EditOptions) -> int:
  if operation == "interpolate":
    return options.rows * options.num_anchors
  return options.rows


def _grid_png(images_rc: np.ndarray) -> np.ndarray:
  rows, columns = images_rc.shape[:2]
  return make_grid(images_rc.reshape(rows * columns, *images_rc.shape[2:]),
                   num_cols=columns)


def run_edit(workdir: str, *, out_dir: str, operation: str, options: EditOptions,
             image_paths: Optional[Sequence[str]] = None, split: str = "test",
             extractor_workdir: Optional[str] = None, seed: int = 0,
             step: Optional[int] = None) -> dict[str, Any]:
  """Runs one operation and writes its grids and `edit.json` into `out_dir`.

  Args:
    workdir: a GAN or VAE run (read only).
    out_dir: the output directory (created; refused inside `workdir`).
    operation: one of `OPERATIONS`.
    options: the operations' settings.
    image_paths: the user's images (VAE encodings, inpainting) instead of `split`.
    split: the dataset split real images come from.
    extractor_workdir: a classifier run: features of GAN inpainting, class
      probabilities along a class interpolation.
    seed: seeds latents, drawn classes, random masks and the projector.
    step: the checkpoint (default: the newest).

  Returns:
    The JSON written to `out_dir/edit.json`.

  Raises:
    ConfigError, WorkdirError, CheckpointError, ImageError, DatasetError: bad input, as
      one line, before anything is written.
  """
  if operation not in OPERATIONS:
    raise ConfigError(f"Unknown --operation={operation!r}: use one of "
                      f"{', '.join(OPERATIONS)}.")
  spec = read_editable(workdir)
  out_dir = check_out_dir(out_dir, spec.workdir)
  kind = spec.kind.name
  if operation == "class_interpolate" and not is_conditional(spec):
    raise ConfigError(f"{spec.workdir} holds an unconditional {kind}: class "
                      "interpolation needs a class-conditional run (configs/cgan.py, or "
                      "configs/vae.py:cvae).")
  if operation == "interpolate" and image_paths and kind == "vae":
    if len(image_paths) % options.num_anchors:
      raise ConfigError(f"{len(image_paths)} --images do not split into rows of "
                        f"--num_anchors={options.num_anchors}.")
    options = dataclasses.replace(options, rows=len(image_paths) // options.num_anchors)
  elif image_paths and operation in ("traverse", "inpaint"):
    options = dataclasses.replace(options, rows=len(image_paths))
  direction = _read_direction(options.direction_file) if (
      operation == "traverse" and options.direction_file) else None
  mask = options.mask
  if operation == "inpaint" and mask.kind == "file":
    if not options.mask_file:
      raise ConfigError("--mask=file needs --mask_file=PNG (white = missing).")
    mask = dataclasses.replace(mask, known_hw1=read_mask(options.mask_file,
                                                         spec.data_info["image_shape"]))
  real = operation == "inpaint" or (kind == "vae" and operation in ("interpolate",
                                                                    "traverse"))
  images = labels = None
  if real:
    images, labels = read_inputs(spec, image_paths=image_paths, split=split,
                                 count=_images_needed(operation, options))
    labels = class_inputs(spec, labels)
  editable = open_editable(spec, step)
  common = dict(rows=options.rows, seed=seed)
  if operation == "interpolate":
    numbers, grids = edit_runs.interpolate(
        editable, method=options.interpolation, num_anchors=options.num_anchors,
        num_steps=options.path_steps, images_nhwc=images, labels_n=labels, **common)
  elif operation == "traverse":
    numbers, grids = edit_runs.traverse(
        editable, coordinates=options.coordinates, direction_z=direction,
        span=options.span, num_steps=options.path_steps, images_nhwc=images,
        labels_n=labels, **common)
  elif operation == "truncate":
    numbers, grids = edit_runs.truncate(editable, psis=options.psis,
                                        thresholds=options.thresholds, **common)
  elif operation == "class_interpolate":
    classify = None
    if extractor_workdir:
      from cnnjax.runs.classifier import load_extractor
      extractor = load_extractor(extractor_workdir)
      classify = lambda x: extractor.features_and_logits(x)[1]
    numbers, grids = edit_runs.class_interpolate(
        editable, classes=options.classes, num_steps=options.path_steps,
        classify=classify, **common)
  else:
    features = None
    if kind == "gan" and extractor_workdir:
      features = inpaint_runs.bind_features(extractor_workdir, editable.image_shape[-1])
    numbers, grids = inpaint_runs.inpaint(
        editable, images, labels, mask, method=options.inpaint_method, seed=seed,
        num_steps=options.inpaint_steps, optimisation=options.optimisation,
        projector=options.projector, features=features)
  os.makedirs(out_dir, exist_ok=True)
  names = {}
  for name, images_rc in grids.items():
    names[name] = f"{name}.png"
    save_png(os.path.join(out_dir, names[name]), _grid_png(images_rc))
  settings = {name: value for name, value in dataclasses.asdict(options).items()
              if name not in ("mask",)}
  settings["mask"] = {k: v for k, v in dataclasses.asdict(mask).items()
                      if k != "known_hw1"}
  result = {"operation": operation, "workdir": spec.workdir, "kind": kind,
            "step": editable.step, "seed": seed, "grids": names,
            "images": list(image_paths) if image_paths else None,
            "split": None if image_paths or not real else split,
            "extractor_workdir": extractor_workdir, "settings": _jsonable(settings),
            **_jsonable(numbers)}
  write_json_atomic(os.path.join(out_dir, RESULT_FILE), result)
  logging.info("edit %s of %s: %s in %s", operation, spec.workdir,
               ", ".join(names.values()), out_dir)
  return result


def _jsonable(value):
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, np.generic):
    return value.item()
  return value
