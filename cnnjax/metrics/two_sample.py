"""Classifier two-sample test: train a discriminator to tell real from generated.

A fresh MLP is trained on part of both sets and scored on the rest (Lopez-Paz & Oquab,
2017). If the generator matched the data, no classifier could beat chance, so the
held-out accuracy is 0.5; the further above 0.5, the more distinguishable the sets.
Accuracy is class-balanced (mean of the per-class accuracies) and training batches hold
equally many samples of each class, so 0.5 means chance even when the sets differ in
size. Everything is deterministic from `seed`: `jax.random.key(seed)` folded with a
fixed stream id per use (splits, initialisation, minibatches).
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.stats

from cnnjax.errors import ConfigError

# Independent random streams, folded into the seed's key.
_REAL_SPLIT_STREAM, _FAKE_SPLIT_STREAM, _INIT_STREAM, _BATCH_STREAM = range(4)
# Features whose training std is below this are constant: they are only centred.
_MIN_FEATURE_STD = 1e-12


class _Discriminator(nn.Module):
  """MLP with ReLU hidden layers, one logit per sample (> 0: real)."""
  hidden: int
  num_hidden_layers: int

  @nn.compact
  def __call__(self, features_bd: jax.Array) -> jax.Array:
    activations_bh = features_bd
    for _ in range(self.num_hidden_layers):
      activations_bh = nn.relu(nn.Dense(self.hidden)(activations_bh))
    return nn.Dense(1)(activations_bh)[:, 0]


@functools.partial(jax.jit, static_argnames=("hidden", "num_hidden_layers", "steps",
                                             "batch_size_per_class"))
def _train_and_score(key: jax.Array, real_train_nd: jax.Array,
                     fake_train_md: jax.Array, heldout_kd: jax.Array,
                     lr: jax.Array, weight_decay: jax.Array, *, hidden: int,
                     num_hidden_layers: int, steps: int,
                     batch_size_per_class: int) -> tuple[jax.Array, jax.Array]:
  """Trains a discriminator with AdamW and returns (held-out logits (K,), losses)."""
  model = _Discriminator(hidden, num_hidden_layers)
  optimizer = optax.adamw(lr, weight_decay=weight_decay)
  params = model.init(jax.random.fold_in(key, _INIT_STREAM), real_train_nd[:1])
  batch_key = jax.random.fold_in(key, _BATCH_STREAM)

  def loss_fn(params, real_bd, fake_bd):
    # Binary cross-entropy with D = sigmoid(logit), as the GAN discriminator loss.
    return (jnp.mean(jax.nn.softplus(-model.apply(params, real_bd))) +
            jnp.mean(jax.nn.softplus(model.apply(params, fake_bd)))) / 2

  def train_step(carry, step):
    params, opt_state = carry
    real_key, fake_key = jax.random.split(jax.random.fold_in(batch_key, step))
    real_indices = jax.random.randint(real_key, (batch_size_per_class,), 0,
                                      real_train_nd.shape[0])
    fake_indices = jax.random.randint(fake_key, (batch_size_per_class,), 0,
                                      fake_train_md.shape[0])
    loss, grads = jax.value_and_grad(loss_fn)(params, real_train_nd[real_indices],
                                              fake_train_md[fake_indices])
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  (params, _), losses = jax.lax.scan(train_step, (params, optimizer.init(params)),
                                     jnp.arange(steps))
  return model.apply(params, heldout_kd), losses


def _as_sample_matrix(samples, name: str) -> np.ndarray:
  """Flattens samples (N, ...) to float32 (N, D); raises ConfigError if unusable."""
  samples = np.asarray(samples, dtype=np.float32)
  if samples.ndim < 2:
    raise ConfigError(f"{name} must have shape (num_samples, ...), got "
                      f"{samples.shape}.")
  samples_nd = samples.reshape(samples.shape[0], -1)
  if not np.isfinite(samples_nd).all():
    raise ConfigError(f"{name} contain NaN or infinite values.")
  return samples_nd


def _split(samples_nd: np.ndarray, key: jax.Array,
           holdout_fraction: float, name: str) -> tuple[np.ndarray, np.ndarray]:
  """Shuffles and splits samples into (train, held-out) parts."""
  num_samples = samples_nd.shape[0]
  num_heldout = round(holdout_fraction * num_samples)
  if not 1 <= num_heldout < num_samples:
    raise ConfigError(f"holdout_fraction={holdout_fraction} of {num_samples} {name} "
                      f"leaves no training or no held-out samples.")
  order = np.asarray(jax.random.permutation(key, num_samples))
  return samples_nd[order[num_heldout:]], samples_nd[order[:num_heldout]]


def _pooled_mean_and_std(parts: list[np.ndarray],
                         rows_per_chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
  """Per-feature float64 mean and std (D,) of the rows of all parts (N_i, D).

  Works through float64 copies of `rows_per_chunk` rows at a time, since flattened
  images can make a full float64 copy large. Constant features get std 1.
  """
  num_rows = sum(len(part) for part in parts)
  mean_d = sum(part.sum(axis=0, dtype=np.float64) for part in parts) / num_rows
  squared_deviation_d = np.zeros_like(mean_d)
  for part in parts:
    for start in range(0, len(part), rows_per_chunk):
      chunk_bd = part[start:start + rows_per_chunk].astype(np.float64) - mean_d
      squared_deviation_d += np.einsum("bd,bd->d", chunk_bd, chunk_bd)
  std_d = np.sqrt(squared_deviation_d / num_rows)
  std_d[std_d < _MIN_FEATURE_STD] = 1.0
  return mean_d, std_d


def classifier_two_sample_test(real_features, fake_features, *, seed: int = 0,
                               hidden: int = 256, num_hidden_layers: int = 2,
                               steps: int = 2000, lr: float = 1e-3,
                               weight_decay: float = 1e-4,
                               batch_size_per_class: int = 128,
                               holdout_fraction: float = 0.3
                               ) -> dict[str, float | int]:
  """Held-out accuracy of a discriminator trained to tell real from fake.

  Both sets are shuffled and split into train/held-out parts; features are
  standardised with the mean and std of the training part (both classes pooled), a
  fresh MLP is trained with AdamW on balanced minibatches drawn with replacement, and
  a held-out sample is called real when its logit is > 0.

  Args:
    real_features: real samples, shape (N, ...): features or images (flattened).
    fake_features: generated samples, shape (M, ...), same size per sample.
    seed: seed of the splits, the initialisation and the minibatches.
    hidden: width of each hidden layer.
    num_hidden_layers: number of hidden ReLU layers.
    steps: optimiser steps.
    lr: AdamW learning rate.
    weight_decay: AdamW decoupled weight decay.
    batch_size_per_class: real and fake samples in each minibatch (each).
    holdout_fraction: fraction of each set held out for scoring.

  Returns:
    accuracy: class-balanced held-out accuracy (0.5 = indistinguishable).
    accuracy_stderr: its standard error, 0.5 sqrt(a_r(1-a_r)/n_r + a_f(1-a_f)/n_f).
    p_value: one-sided p-value of accuracy > 0.5 under the null hypothesis of equal
      distributions (normal approximation, variance (1/n_r + 1/n_f) / 16, an upper
      bound on the null variance).
    real_accuracy, fake_accuracy: held-out accuracy on each class.
    final_train_loss: mean minibatch cross-entropy over the last 10% of the steps.
    num_train_real, num_train_fake, num_heldout_real, num_heldout_fake: counts.

  Raises:
    ConfigError: on samples of different sizes, a split leaving a part empty, or
      non-positive hyperparameters.
  """
  real_nd = _as_sample_matrix(real_features, "real_features")
  fake_md = _as_sample_matrix(fake_features, "fake_features")
  if real_nd.shape[1] != fake_md.shape[1]:
    raise ConfigError(f"real_features have {real_nd.shape[1]} values per sample but "
                      f"fake_features have {fake_md.shape[1]}.")
  if min(hidden, num_hidden_layers + 1, steps, batch_size_per_class) < 1 or lr <= 0:
    raise ConfigError("classifier_two_sample_test needs hidden, steps and "
                      "batch_size_per_class >= 1, num_hidden_layers >= 0 and lr > 0.")
  if not 0.0 < holdout_fraction < 1.0:
    raise ConfigError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}.")
  key = jax.random.key(seed)
  real_train, real_heldout = _split(
      real_nd, jax.random.fold_in(key, _REAL_SPLIT_STREAM), holdout_fraction,
      "real_features")
  fake_train, fake_heldout = _split(
      fake_md, jax.random.fold_in(key, _FAKE_SPLIT_STREAM), holdout_fraction,
      "fake_features")

  mean_d, std_d = _pooled_mean_and_std([real_train, fake_train])
  standardise = lambda samples: ((samples - mean_d) / std_d).astype(np.float32)

  heldout_logits, losses = _train_and_score(
      key, standardise(real_train), standardise(fake_train),
      standardise(np.concatenate([real_heldout, fake_heldout])),
      jnp.float32(lr), jnp.float32(weight_decay), hidden=hidden,
      num_hidden_layers=num_hidden_layers, steps=steps,
      batch_size_per_class=batch_size_per_class)
  called_real = np.asarray(heldout_logits) > 0
  num_heldout_real, num_heldout_fake = len(real_heldout), len(fake_heldout)
  real_accuracy = float(called_real[:num_heldout_real].mean())
  fake_accuracy = float(1.0 - called_real[num_heldout_real:].mean())
  accuracy = (real_accuracy + fake_accuracy) / 2
  accuracy_stderr = 0.5 * math.sqrt(
      real_accuracy * (1 - real_accuracy) / num_heldout_real +
      fake_accuracy * (1 - fake_accuracy) / num_heldout_fake)
  null_std = 0.25 * math.sqrt(1 / num_heldout_real + 1 / num_heldout_fake)
  last_steps = max(1, steps // 10)
  return {
      "accuracy": accuracy,
      "accuracy_stderr": accuracy_stderr,
      "p_value": float(scipy.stats.norm.sf((accuracy - 0.5) / null_std)),
      "real_accuracy": real_accuracy,
      "fake_accuracy": fake_accuracy,
      "final_train_loss": float(np.mean(np.asarray(losses)[-last_steps:])),
      "num_train_real": len(real_train),
      "num_train_fake": len(fake_train),
      "num_heldout_real": num_heldout_real,
      "num_heldout_fake": num_heldout_fake,
  }
