"""Test-set log-likelihood of a trained VAE: the ELBO and the IWAE bound on log p(x).

Each image gets its own key, folded from the seed and its index in the split, for its
binarisation (Bernoulli likelihoods), its ELBO noise and its k importance samples, so
the numbers depend neither on the batch size nor on the number of devices. Batches are
sharded over every device; the k importance samples are drawn and decoded `chunk` at a
time, their log-sum-exp accumulated, so memory does not grow with k.

Command line (writes `DIR/likelihood.json`):
  python -m cnnjax.evaluation.vae_likelihood --workdir=DIR [--num_importance=1000]
      [--split=test] [--seed=0] [--step=N]
"""

import functools
import math
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from jax.sharding import Mesh, PartitionSpec as P

from cnnjax.data.pipeline import scale_to_unit_range
from cnnjax.errors import CnnjaxError, ConfigError
from cnnjax.evaluation.features import load_split
from cnnjax.io.workdir import load_run_config, read_json, write_json_atomic
from cnnjax.losses.vae import (Likelihood, bits_per_dim, elbo_terms,
                               importance_log_weights)
from cnnjax.models.vae import ConvVae, with_upsample
from cnnjax.train import parallel

LIKELIHOOD_FILE = "likelihood.json"
# What each image's key is folded with, per use.
_TARGETS, _ELBO_NOISE, _IMPORTANCE_NOISE = 0, 1, 2


def example_bounds(params: Any, images_bhwc: jax.Array, labels_b: jax.Array,
                   indices_b: jax.Array, key_data: jax.Array, *, vae: ConvVae,
                   likelihood: Likelihood, conditional: bool, num_importance: int,
                   chunk: int) -> dict[str, jax.Array]:
  """Per-image bounds on log p(x), in nats.

  Args:
    params: the `ConvVae`'s parameters.
    images_bhwc: images (B, H, W, C) in [-1, 1].
    labels_b: their labels (B,) int32 (ignored unless `conditional`).
    indices_b: each image's index in its split (B,), which decides its randomness.
    key_data: raw key data of the evaluation's base key.
    vae, likelihood, conditional: the model.
    num_importance: k of the IWAE bound (0: ELBO only).
    chunk: importance samples decoded at once.

  Returns:
    `elbo` (B,) (one-sample estimate, analytic KL) and, when num_importance > 0,
    `iwae` (B,).
  """
  labels_b = labels_b if conditional else None
  keys = jax.vmap(lambda index: jax.random.fold_in(
      jax.random.wrap_key_data(key_data), index))(indices_b)
  fold = lambda use: jax.vmap(lambda key: jax.random.fold_in(key, use))(keys)
  targets = jax.vmap(lambda image, key: likelihood.targets(image[None], key)[0])(
      images_bhwc, fold(_TARGETS))
  latent_dim = vae.encoder.latent_dim
  noise_bz = jax.vmap(lambda key: jax.random.normal(key, (latent_dim,)))(fold(_ELBO_NOISE))
  log_likelihood_b, kl_b = elbo_terms(vae, params, targets, labels_b, noise_bz, likelihood)
  bounds = {"elbo": log_likelihood_b - kl_b}
  if num_importance <= 0:
    return bounds

  chunk = min(chunk, num_importance)
  mean_bz, log_variance_bz = vae.apply(
      {"params": params}, likelihood.encoder_inputs(targets), labels_b, method="encode")
  importance_keys = fold(_IMPORTANCE_NOISE)

  def accumulate(log_sum_b, chunk_index):
    noise_bkz = jax.vmap(lambda key: jax.random.normal(
        jax.random.fold_in(key, chunk_index), (chunk, latent_dim)))(importance_keys)
    log_weights_bk = importance_log_weights(vae, params, targets, labels_b, mean_bz,
                                            log_variance_bz, noise_bkz, likelihood)
    is_sample = chunk_index * chunk + jnp.arange(chunk) < num_importance  # Last chunk.
    log_weights_bk = jnp.where(is_sample, log_weights_bk, -jnp.inf)
    return jnp.logaddexp(log_sum_b, jax.nn.logsumexp(log_weights_bk, axis=-1)), None

  num_chunks = -(-num_importance // chunk)
  log_sum_b, _ = jax.lax.scan(accumulate, jnp.full(images_bhwc.shape[:1], -jnp.inf),
                              jnp.arange(num_chunks))
  bounds["iwae"] = log_sum_b - math.log(num_importance)
  return bounds


def make_bounds_fn(vae: ConvVae, likelihood: Likelihood, mesh: Mesh, *,
                   conditional: bool, num_importance: int, chunk: int,
                   upsample: str = "flax"):
  """`example_bounds` jitted, with the batch sharded over `mesh` (B a multiple of its
  size): `(params, images, labels, indices, key_data) -> {name: (B,)}`.

  The decoder runs with the transposed convolution `upsample` (same parameters; "flax"
  is the faster one without gradients, see `cnnjax.models.vae.with_upsample`).
  """
  per_device = functools.partial(
      example_bounds, vae=with_upsample(vae, upsample), likelihood=likelihood,
      conditional=conditional, num_importance=num_importance, chunk=chunk)
  data = P(parallel.DATA_AXIS)
  return jax.jit(jax.shard_map(per_device, mesh=mesh,
                               in_specs=(P(), data, data, data, P()), out_specs=data,
                               check_vma=False))


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


def evaluate_vae_run(workdir: str, *, split: str = "test",
                     num_importance: int | None = None, seed: int = 0,
                     step: int | None = None) -> dict[str, Any]:
  """The test ELBO and IWAE log p(x) of a trained VAE, written to `workdir/likelihood.json`.

  Args:
    workdir: the run's directory (restored read-only).
    split: the dataset split to score.
    num_importance: k of the IWAE bound (default: the config's `eval.num_importance`).
    seed: seed of the binarisation and of the posterior samples.
    step: the checkpoint to evaluate (default: the newest).

  Returns:
    {"step", "metrics": {...}, "settings": {k, split, step, seed, ...}}, as written.
  """
  from cnnjax.train.sampling import restore_run_state  # It imports the program registry.
  workdir = os.path.abspath(os.path.expanduser(workdir))
  config, _ = load_run_config(workdir)
  if config.get("experiment") != "vae":
    raise ConfigError(f"{workdir} holds a {config.get('experiment', 'gan')!r} run, not a "
                      "VAE; train one with `python run.py --config=configs/vae.py`.")
  num_importance = config.eval.num_importance if num_importance is None else num_importance
  if num_importance < 0:
    raise ConfigError(f"--num_importance must be >= 0 (0: the ELBO only), got "
                      f"{num_importance}.")
  config, program, state, restored_step = restore_run_state(workdir, step)
  images, labels = load_split(config.data.name, split, config.data.data_dir or None,
                              config.data.image_size, config.data.resize)
  bounds_fn = make_bounds_fn(program.vae, program.likelihood, program.mesh,
                             conditional=program.conditional,
                             num_importance=num_importance,
                             chunk=config.eval.importance_chunk)
  logging.info("Scoring %d %s images of %s at step %d (IWAE k=%d).", len(images), split,
               workdir, restored_step, num_importance)
  metrics = evaluate_likelihood(bounds_fn, state.params, images, labels,
                                mesh=program.mesh,
                                batch_size=config.eval.likelihood_batch_size,
                                seed=seed, likelihood=program.likelihood)
  result = {"step": restored_step, "metrics": metrics, "settings": {
      "k": num_importance, "split": split, "step": restored_step, "seed": seed,
      "dataset": config.data.name, "likelihood": program.likelihood.name,
      "binarize": program.likelihood.binarize,
      "importance_chunk": config.eval.importance_chunk}}
  logging.info("Step %d: -ELBO %.3f nats (%.4f bits/dim), IWAE -log p(x) <= %.3f nats.",
               restored_step, metrics["neg_elbo_nats"], metrics["neg_elbo_bits_per_dim"],
               metrics.get("iwae_nll_nats", float("nan")))
  if jax.process_index() == 0:
    write_json_atomic(os.path.join(workdir, LIKELIHOOD_FILE), result)
  return result


def read_likelihood(workdir: str) -> dict[str, Any] | None:
  """The run's `likelihood.json`, or None when it has none."""
  path = os.path.join(workdir, LIKELIHOOD_FILE)
  return read_json(path) if os.path.isfile(path) else None


def main(argv: list[str]) -> None:
  """Scores `--workdir`; bad input ends with a one-line `error: ...` and status 2."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments {' '.join(argv[1:])!r}.")
  try:
    if flags.FLAGS.workdir is None:
      raise ConfigError("--workdir is required: the directory of a trained VAE run.")
    evaluate_vae_run(flags.FLAGS.workdir, split=flags.FLAGS.split,
                     num_importance=flags.FLAGS.num_importance, seed=flags.FLAGS.seed,
                     step=flags.FLAGS.step)
  except CnnjaxError as error:
    logging.flush()
    sys.stderr.write("error: " + " ".join(str(error).split()) + "\n")
    sys.exit(2)


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "Work directory of a trained VAE run.")
  flags.DEFINE_string("split", "test", "Dataset split to score.")
  flags.DEFINE_integer("num_importance", None,
                       "IWAE samples k (default: the run's eval.num_importance).")
  flags.DEFINE_integer("seed", 0, "Seed of the binarisation and posterior samples.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).")
  app.run(main)
