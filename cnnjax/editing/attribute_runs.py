"""Attribute edits and class analogies on restored GAN and VAE runs.

Labelled latents: for a VAE, the posterior means of real `shapes` training images with
their ground-truth class and factors; for a GAN, latents z ~ N(0, I) labelled by the
factor model's reading of G(z). Edited latents: the encodings of the test split (VAE) or
fresh latents from another stream of the seed (GAN); before and after images are both
decoded from latents (the strength-0 column is the unedited decoding) and read by the
factor model (`cnnjax.editing.attributes.measure_edits`).
"""

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special

from cnnjax.data.factors import load_factor_split
from cnnjax.data.splits import load_split
from cnnjax.data.pipeline import scale_to_unit_range
from cnnjax.editing import attributes
from cnnjax.errors import ConfigError
from cnnjax.runs.factors import FactorModel
from cnnjax.runs.restore import OpenRun
from cnnjax.train import parallel

CHUNK = 256                  # Images per device call (a multiple of the device count).
LABEL_STREAM, EDIT_STREAM, CLASS_STREAM = 0, 1, 2


def dataset_family(name: str) -> str:
  """`shapes/tiny:1.0.0` -> `shapes`."""
  return name.split(":")[0].split("/")[0]


def _chunked(function, arrays: Sequence[np.ndarray], mesh) -> np.ndarray:
  """Applies a jitted `function(*chunks)` over fixed-size chunks, sharded over `mesh`."""
  size = -(-CHUNK // mesh.size) * mesh.size
  sharding = parallel.data_sharded(mesh)
  outputs = []
  for start in range(0, len(arrays[0]), size):
    chunks = [np.asarray(array[start:start + size]) for array in arrays]
    valid = len(chunks[0])
    chunks = [np.pad(chunk, ((0, size - valid),) + ((0, 0),) * (chunk.ndim - 1))
              for chunk in chunks]
    result = function(*[jax.device_put(chunk, sharding) for chunk in chunks])
    outputs.append(np.asarray(jax.device_get(result))[:valid])
  return np.concatenate(outputs)


def generate(run: OpenRun, latents_nz: np.ndarray, labels_n: np.ndarray) -> np.ndarray:
  """Images (N, H, W, C) in [-1, 1] decoded from latents (labels ignored if the run is
  unconditional)."""
  program = run.program
  if run.kind.name == "gan" and not program.num_classes:
    return _chunked(lambda z: program.generate(run.state, z),
                    [latents_nz.astype(np.float32)], program.mesh)
  return _chunked(lambda z, y: program.generate(run.state, z, y),
                  [latents_nz.astype(np.float32), labels_n.astype(np.int32)], program.mesh)


def encode(run: OpenRun, images_nhwc: np.ndarray, labels_n: np.ndarray) -> np.ndarray:
  """A VAE's posterior means (N, Z) of images in [-1, 1]."""
  program = run.program
  conditional = program.conditional
  encode_fn = jax.jit(lambda x, y: program.vae.apply(
      {"params": run.state.params}, x, y if conditional else None, method="encode")[0])
  return _chunked(encode_fn, [images_nhwc.astype(np.float32), labels_n.astype(np.int32)],
                  program.mesh)


def _read(factor_model: FactorModel, images_nhwc: np.ndarray):
  logits_nk, factors_nf = factor_model.predict(images_nhwc)
  return scipy.special.softmax(logits_nk.astype(np.float64), -1), factors_nf


def _gan_latents(run: OpenRun, seed: int, stream: int, num: int):
  key = jax.random.fold_in(jax.random.key(seed), stream)
  latents = np.asarray(jax.random.normal(key, (num, run.program.latent_dim)))
  labels = np.asarray(jax.random.randint(jax.random.fold_in(key, CLASS_STREAM), (num,),
                                         0, max(run.program.num_classes, 1)))
  return latents, labels


def labelled_latents(run: OpenRun, factor_model: FactorModel, *, num: int, seed: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(latents (N, Z), class probabilities (N, K), factors (N, F)) to fit directions on."""
  if run.kind.name == "vae":
    data = _real_split(run, "train", num)
    probs = np.eye(factor_model.num_classes)[data.labels[:num]]
    return (encode(run, scale_to_unit_range(data.images[:num]), data.labels[:num]),
            probs, data.factors[:num])
  latents, labels = _gan_latents(run, seed, LABEL_STREAM, num)
  probs, factors = _read(factor_model, generate(run, latents, labels))
  return latents, probs, factors


def _real_split(run: OpenRun, split: str, num: int):
  data_config = run.config.data
  data = load_factor_split(data_config.name, split, data_config.data_dir,
                           data_config.image_size, data_config.resize)
  if len(data) < num:
    raise ConfigError(f"The {split} split of {data_config.name} has {len(data)} "
                      f"images, fewer than the {num} asked for; ask for fewer.")
  return data


def latents_to_edit(run: OpenRun, *, num: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(latents (N, Z), labels (N,)): test-split encodings (VAE) or fresh latents (GAN)."""
  if run.kind.name == "vae":
    data = _real_split(run, "test", num)
    labels = data.labels[:num]
    return encode(run, scale_to_unit_range(data.images[:num]), labels), labels
  return _gan_latents(run, seed, EDIT_STREAM, num)


def attribute_edit(run: OpenRun, factor_model: FactorModel, *, attribute: str,
                   method: str, strengths: Sequence[float], conditions: Sequence[str],
                   threshold: float, num_label: int, num_edit: int, seed: int
                   ) -> tuple[dict[str, Any], np.ndarray]:
  """Fits the attribute's direction, edits new latents by each strength and measures.

  `threshold` is in standard deviations of the attribute over the labelled latents.

  Returns:
    (the JSON result: settings, direction cosines, per-strength measurements; images
    (S, N, H, W, C) of every edited latent at every strength).
  """
  latents_nz, probs_nk, factors_nf = labelled_latents(run, factor_model, num=num_label,
                                                      seed=seed)

  def direction_of(name):
    values_n = attributes.attribute_values(name, probs_nk, factors_nf)
    return attributes.attribute_direction(
        method, latents_nz, attributes.attribute_labels(name, values_n))

  own_values_n = attributes.attribute_values(attribute, probs_nk, factors_nf)
  threshold_units = threshold * float(np.std(own_values_n))
  primary_z = direction_of(attribute)
  condition_cz = np.stack([direction_of(name) for name in conditions]) if conditions \
      else np.zeros((0, len(primary_z)))
  direction_z = attributes.conditional_direction(primary_z, condition_cz)
  edit_nz, labels_n = latents_to_edit(run, num=num_edit, seed=seed)
  strengths_s = np.asarray(strengths, np.float32)
  edited_snz = np.asarray(attributes.edit_latents(
      jnp.asarray(edit_nz), jnp.asarray(direction_z), jnp.asarray(strengths_s)))
  images_snhwc = generate(run, edited_snz.reshape(-1, edited_snz.shape[-1]),
                          np.tile(labels_n, len(strengths_s)))
  images_snhwc = images_snhwc.reshape(len(strengths_s), num_edit, *images_snhwc.shape[1:])
  probs_before, factors_before = _read(factor_model, generate(run, edit_nz, labels_n))
  probs_after, factors_after = _read(factor_model, images_snhwc.reshape(
      -1, *images_snhwc.shape[2:]))
  num_classes = probs_after.shape[-1]
  measurements = attributes.measure_edits(
      attribute, strengths_s, threshold_units, probs_before, factors_before,
      probs_after.reshape(len(strengths_s), num_edit, num_classes),
      factors_after.reshape(len(strengths_s), num_edit, -1))
  result = {
      "attribute": attribute, "method": method, "conditions": list(conditions),
      "threshold_std": threshold, "threshold": threshold_units, "num_label": num_label, "num_edit": num_edit,
      "seed": seed, "run_kind": run.kind.name, "run_step": run.step,
      "factors_workdir": factor_model.workdir, "factors_step": factor_model.step,
      "labelled_by": "ground truth" if run.kind.name == "vae" else "factor model",
      "cosine_with_unconditioned": float(primary_z @ direction_z),
      "positive_fraction": float(np.mean(attributes.attribute_labels(
          attribute, attributes.attribute_values(attribute, probs_nk, factors_nf)))),
      "edits": measurements}
  return result, images_snhwc


def class_analogy(run: OpenRun, *, source_class: int, target_class: int,
                  strengths: Sequence[float], num_label: int, num_edit: int
                  ) -> tuple[dict[str, Any], np.ndarray]:
  """The digit analogy: `z + s * (mean z of target class - mean z of source class)` for
  test images of the source class, from a VAE's encodings of real images.

  Returns:
    (the JSON settings, images (S + 1, N, H, W, C): the inputs, then each strength).
  """
  if run.kind.name != "vae":
    raise ConfigError(f"{run.workdir} holds a {run.kind.name!r} run; the class analogy "
                      "needs a VAE (it encodes real images): pass a VAE's --workdir.")
  data_config = run.config.data
  num_classes = run.data_info.get("num_classes") or 0
  for name, value in (("source", source_class), ("target", target_class)):
    if not 0 <= value < num_classes:
      raise ConfigError(f"The analogy's {name} class {value} is not one of the run's "
                        f"{num_classes} classes 0..{num_classes - 1}.")
  train_images, train_labels = load_split(data_config.name, "train", data_config.data_dir,
                                          data_config.image_size, data_config.resize)
  train_images, train_labels = train_images[:num_label], train_labels[:num_label]
  latents_nz = encode(run, scale_to_unit_range(train_images), train_labels)
  means = {}
  for value in (source_class, target_class):
    if not np.any(train_labels == value):
      raise ConfigError(f"No labelled image of class {value} among the first "
                        f"{num_label}; raise --num_label.")
    means[value] = latents_nz[train_labels == value].mean(0)
  difference_z = means[target_class] - means[source_class]
  test_images, test_labels = load_split(data_config.name, "test", data_config.data_dir,
                                        data_config.image_size, data_config.resize)
  chosen = np.flatnonzero(test_labels == source_class)[:num_edit]
  inputs = scale_to_unit_range(test_images[chosen])
  # A conditional VAE decodes with the source label: only the latent carries the edit.
  labels_n = test_labels[chosen]
  codes_nz = encode(run, inputs, labels_n)
  strengths_s = np.asarray(strengths, np.float32)
  edited_snz = codes_nz[None] + strengths_s[:, None, None] * difference_z[None, None]
  decoded = generate(run, edited_snz.reshape(-1, codes_nz.shape[-1]),
                     np.tile(labels_n, len(strengths_s)))
  images = np.concatenate([inputs[None], decoded.reshape(len(strengths_s), len(chosen),
                                                          *inputs.shape[1:])])
  return {"source_class": source_class, "target_class": target_class,
          "strengths": [float(s) for s in strengths_s], "num_label": num_label,
          "num_edit": int(len(chosen)), "difference_norm": float(
              np.linalg.norm(difference_z)), "run_step": run.step}, images
