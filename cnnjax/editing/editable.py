"""A restored GAN or VAE run as pure functions of its weights, for editing; the real
images and masks an edit reads; and the device mapping every edit runs through.

`Editable.decode(weights, latents (B, Z), classes)` and, for a VAE,
`Editable.encode(weights, images, classes)` are pure and traceable: the weights are an
argument (replicated over the mesh), not constants folded into each program. `classes`
is None for an unconditional model, else int labels (B,) or class weights (B, K).
"""

import dataclasses
import os
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np

from cnnjax.data.pipeline import scale_to_unit_range
from cnnjax.data.splits import load_split
from cnnjax.errors import ConfigError, ImageError, WorkdirError
from cnnjax.io.image_files import read_image
from cnnjax.models import is_conditional_generator
from cnnjax.runs.opening import read_run
from cnnjax.runs.restore import RunSpec, open_spec
from cnnjax.train import parallel

EDITABLE_KINDS = ("gan", "vae")
HINT = ("editing decodes latents: pass a GAN run (configs/dcgan.py, cgan.py, ...) or a "
        "VAE run (configs/vae.py)")


@dataclasses.dataclass(frozen=True)
class Editable:
  """A GAN's generator or a VAE's encoder and decoder, with their weights.

  Attributes:
    workdir, kind, step: the run (kind "gan" or "vae") and its checkpoint.
    config: the run's config.
    weights: the variables `decode`/`encode` take, replicated over `mesh`.
    decode: (weights, latents (B, Z), classes) -> images (B, H, W, C) in [-1, 1].
    encode: (weights, images, classes) -> posterior means (B, Z); None for a GAN.
    latent_dim: Z.
    num_classes: K of a conditional model, else 0.
    image_shape: (H, W, C).
    mesh: the data mesh.
  """
  workdir: str
  kind: str
  step: int
  config: Any
  weights: Any
  decode: Callable[..., jax.Array]
  encode: Optional[Callable[..., jax.Array]]
  latent_dim: int
  num_classes: int
  image_shape: tuple[int, int, int]
  mesh: Any


def read_editable(workdir: str) -> RunSpec:
  """The run's recorded description (nothing restored).

  Raises:
    WorkdirError: no run there.
    ConfigError: a run of another kind (classifier, pix2pix, ...).
  """
  return read_run(workdir, kinds=EDITABLE_KINDS, hint=HINT)


def open_editable(spec: RunSpec, step: int | None = None) -> Editable:
  """Restores a GAN or VAE run (see `read_editable`) for editing, read-only.

  Raises:
    CheckpointError: no readable checkpoint (at `step`).
  """
  run = open_spec(spec, step)
  program, state = run.program, run.state
  image_shape = tuple(run.data_info["image_shape"])
  if run.kind.name == "gan":
    params = state.generator_ema if program.uses_ema else state.generator.params
    weights = {"params": params, "batch_stats": state.generator.batch_stats}
    generator = program.generator

    def decode(variables, latents_bz, classes=None):
      labels = () if classes is None else (classes,)
      return generator.apply(variables, latents_bz, *labels, train=False)
    encode = None
  else:
    weights = {"params": state.params}
    vae, likelihood = program.vae, program.likelihood

    def decode(variables, latents_bz, classes=None):
      return likelihood.mean_image(vae.apply(variables, latents_bz, classes,
                                             method="decode"))

    def encode(variables, images_bhwc, classes=None):
      return vae.apply(variables, images_bhwc, classes, method="encode")[0]
  return Editable(workdir=run.workdir, kind=run.kind.name, step=run.step,
                  config=run.config, weights=parallel.put_replicated(weights, program.mesh),
                  decode=decode, encode=encode, latent_dim=program.latent_dim,
                  num_classes=program.num_classes or 0, image_shape=image_shape,
                  mesh=program.mesh)


def map_over_devices(function: Callable, replicated: Any, arrays: Sequence[np.ndarray],
                     mesh) -> Any:
  """`jax.jit(function)(replicated, *arrays)` with the arrays' leading (batch) axis
  padded to a multiple of the devices and sharded over `mesh`; the padding is dropped
  from every output (a pytree of arrays with the same leading axis)."""
  num = len(arrays[0])
  size = -(-num // mesh.size) * mesh.size
  sharding = parallel.data_sharded(mesh)
  padded = [jax.device_put(np.pad(np.asarray(array), ((0, size - num),) +
                                  ((0, 0),) * (np.ndim(array) - 1)), sharding)
            for array in arrays]
  outputs = jax.jit(function, out_shardings=sharding)(replicated, *padded)
  return jax.tree.map(lambda out: np.asarray(jax.device_get(out))[:num], outputs)


def read_inputs(spec: RunSpec, *, image_paths: Sequence[str] | None,
                split: str, count: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
  """The real images an edit starts from: the user's files, else the first `count`
  images of `split` of the run's dataset.

  Returns:
    (images (N, H, W, C) float32 in [-1, 1], labels (N,) int32 or None).

  Raises:
    ImageError: a file is unreadable, of another size or another number of channels.
    DatasetError, ConfigError: the split is unavailable or has fewer images.
  """
  height, width, channels = spec.data_info["image_shape"]
  if image_paths:
    images = np.stack([read_image(path, channels=channels, size=(height, width),
                                  strict_channels=True) for path in image_paths])
    return images.astype(np.float32), None
  data = spec.config.data
  images, labels = load_split(data.name, split, data.data_dir, data.image_size,
                              data.resize)
  if len(images) < count:
    raise ConfigError(f"The {split} split of {data.name} has {len(images)} images, "
                      f"fewer than the {count} needed; ask for fewer.")
  labels = None if labels is None else labels[:count].astype(np.int32)
  return scale_to_unit_range(images[:count]), labels


def read_mask(path: str, image_shape: tuple[int, int, int]) -> np.ndarray:
  """A user's mask file as a known mask (H, W, 1): white (grey level > 127) = missing.

  Raises:
    ImageError: unreadable, of another size than the images, or marking nothing missing.
  """
  pixels = read_image(path, channels=1)
  height, width = image_shape[:2]
  if pixels.shape[:2] != (height, width):
    raise ImageError(f"The mask {path} is {pixels.shape[0]}x{pixels.shape[1]} but the "
                     f"run's images are {height}x{width}: draw the mask at that size.")
  known = (pixels <= 0.0).astype(np.float32)
  if np.all(known):
    raise ImageError(f"The mask {path} marks no pixel missing: paint the region to "
                     "fill white (and the rest black).")
  return known


def check_out_dir(out_dir: str, run_workdir: str) -> str:
  """The absolute output directory, refused inside the run's own directory.

  Raises:
    WorkdirError: `out_dir` is a file, or the run's directory or inside it.
  """
  out_dir = os.path.abspath(os.path.expanduser(out_dir))
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise WorkdirError(f"--out_dir {out_dir} is a file: pass a directory.")
  run_workdir = os.path.realpath(run_workdir)
  if os.path.commonpath([os.path.realpath(out_dir), run_workdir]) == run_workdir:
    raise WorkdirError(f"--out_dir {out_dir} is inside the run's directory "
                       f"{run_workdir}: editing never writes there; pass another one.")
  return out_dir


def is_conditional(spec: RunSpec) -> bool:
  """Whether the run's generator (GAN) or decoder (CVAE) takes classes."""
  model = spec.config.model
  return is_conditional_generator(model) if spec.kind.name == "gan" else bool(
      model.conditional)


def class_inputs(spec: RunSpec, labels_n: Optional[np.ndarray]) -> Optional[np.ndarray]:
  """The class argument of `decode`/`encode` for real images: their labels for a
  conditional model, None otherwise.

  Raises:
    ConfigError: a conditional model got images without labels (the user's files).
  """
  if not is_conditional(spec):
    return None
  if labels_n is None:
    raise ConfigError(f"{spec.workdir} holds a class-conditional {spec.kind.name}, "
                      "which needs each image's class: read them from a dataset split "
                      "(--split) rather than --images.")
  return labels_n
