"""Test-set log-likelihood of a trained VAE: the ELBO and the IWAE bound on log p(x),
averaged over a whole split (per-image bounds: `cnnjax.train.vae_bounds`), in nats and
bits per dimension; `DIR/likelihood.json` holds the result of `run.py likelihood`.
"""

import math
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from cnnjax.data.pipeline import scale_to_unit_range
from cnnjax.data.splits import load_split
from cnnjax.errors import ConfigError
from cnnjax.io.workdir import read_json
from cnnjax.losses.vae import Likelihood, bits_per_dim
from cnnjax.train import parallel
from cnnjax.train.vae_bounds import make_bounds_fn
from cnnjax.train.vae_program import VaeProgram

LIKELIHOOD_FILE = "likelihood.json"


def _summary(bounds_n: np.ndarray, num_dims: int, likelihood: Likelihood,
             name: str) -> dict[str, float]:
  """Mean negative bound in nats and bits per dimension, with its standard error."""
  nats = -np.asarray(bounds_n, np.float64)
  mean = float(np.mean(nats))
  return {f"{name}_nats": mean,
          f"{name}_bits_per_dim": float(bits_per_dim(mean, num_dims,
                                                     likelihood.nats_offset_per_dim)),
          f"{name}_nats_stderr": float(np.std(nats) / math.sqrt(max(len(nats), 1)))}


def evaluate_likelihood(bounds_fn, params: Any, images_nhwc: np.ndarray,
                        labels_n: np.ndarray | None, *, mesh: Mesh, batch_size: int,
                        seed: int, likelihood: Likelihood) -> dict[str, float]:
  """Mean bounds over a whole split, in fixed-size batches sharded over `mesh`.

  Args:
    bounds_fn: from `make_bounds_fn`.
    params: the model's (replicated) parameters.
    images_nhwc: (N, H, W, C) uint8 images.
    labels_n: (N,) labels or None.
    mesh: the data mesh.
    batch_size: images per call (rounded up to a multiple of the mesh size); the last
      batch is padded, and the padding dropped.
    seed: seed of every image's key.
    likelihood: for the bits-per-dimension conversion.

  Returns:
    `neg_elbo_nats`, `neg_elbo_bits_per_dim`, `neg_elbo_nats_stderr`, the same for
    `iwae_nll` when bounds_fn computes the IWAE bound, and `num_examples`.
  """
  batch_size = -(-max(batch_size, 1) // mesh.size) * mesh.size
  labels_n = np.zeros(len(images_nhwc), np.int32) if labels_n is None else labels_n
  key_data = jax.random.key_data(jax.random.key(seed))
  sharding = parallel.data_sharded(mesh)
  collected: dict[str, list[np.ndarray]] = {}
  for start in range(0, len(images_nhwc), batch_size):
    num_valid = min(batch_size, len(images_nhwc) - start)
    pad = lambda x: np.pad(x, [(0, batch_size - num_valid)] + [(0, 0)] * (x.ndim - 1))
    inputs = [pad(scale_to_unit_range(images_nhwc[start:start + num_valid])),
              pad(np.asarray(labels_n[start:start + num_valid], np.int32)),
              pad(np.arange(start, start + num_valid, dtype=np.int32))]
    bounds = jax.device_get(bounds_fn(params, *[jax.device_put(x, sharding)
                                                for x in inputs], key_data))
    for name, values in bounds.items():
      collected.setdefault(name, []).append(values[:num_valid])
  num_dims = int(np.prod(images_nhwc.shape[1:]))
  results: dict[str, float] = {"num_examples": len(images_nhwc)}
  for name, summary_name in (("elbo", "neg_elbo"), ("iwae", "iwae_nll")):
    if name in collected:
      results.update(_summary(np.concatenate(collected[name]), num_dims, likelihood,
                              summary_name))
  return results


def check_num_importance(num_importance: int) -> None:
  """Raises `ConfigError` for a negative k."""
  if num_importance < 0:
    raise ConfigError(f"--num_importance must be >= 0 (0: the ELBO only), got "
                      f"{num_importance}.")


def score_likelihood(config: ml_collections.ConfigDict, program: VaeProgram, state: Any, *,
                     split: str = "test", num_importance: int | None = None,
                     seed: int = 0, step: int) -> dict[str, Any]:
  """The ELBO and IWAE bound of a VAE state over a whole split.

  Args:
    config: the run's config.
    program: its `VaeProgram`; state: the restored state at `step`.
    split: the dataset split to score.
    num_importance: k of the IWAE bound (default: the config's `eval.num_importance`;
      0: the ELBO only).
    seed: seed of the binarisation and of the posterior samples.
    step: the checkpoint step (recorded in the settings).

  Returns:
    {"step", "metrics": {...}, "settings": {k, split, step, seed, ...}}.
  """
  num_importance = config.eval.num_importance if num_importance is None else num_importance
  check_num_importance(num_importance)
  images, labels = load_split(config.data.name, split, config.data.data_dir or None,
                              config.data.image_size, config.data.resize)
  bounds_fn = make_bounds_fn(program.vae, program.likelihood, program.mesh,
                             conditional=program.conditional,
                             num_importance=num_importance,
                             chunk=config.eval.importance_chunk)
  logging.info("Scoring %d %s images at step %d (IWAE k=%d).", len(images), split, step,
               num_importance)
  metrics = evaluate_likelihood(bounds_fn, state.params, images, labels,
                                mesh=program.mesh,
                                batch_size=config.eval.likelihood_batch_size,
                                seed=seed, likelihood=program.likelihood)
  logging.info("Step %d: -ELBO %.3f nats (%.4f bits/dim), IWAE -log p(x) <= %.3f nats.",
               step, metrics["neg_elbo_nats"], metrics["neg_elbo_bits_per_dim"],
               metrics.get("iwae_nll_nats", float("nan")))
  return {"step": step, "metrics": metrics, "settings": {
      "k": num_importance, "split": split, "step": step, "seed": seed,
      "dataset": config.data.name, "likelihood": program.likelihood.name,
      "binarize": program.likelihood.binarize,
      "importance_chunk": config.eval.importance_chunk}}


def read_likelihood(workdir: str) -> dict[str, Any] | None:
  """The run's `likelihood.json`, or None when it has none."""
  path = os.path.join(workdir, LIKELIHOOD_FILE)
  return read_json(path) if os.path.isfile(path) else None
