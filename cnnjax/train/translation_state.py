"""What pix2pix and CycleGAN programs share: their state (networks by name, the history
pool of fakes, the step's random streams), Adam with pix2pix's linear decay, per-example
noise keys drawn at global shape, and translation of any number of images over a mesh."""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh

from cnnjax.train import parallel
from cnnjax.train.divergence import DivergenceRecord
from cnnjax.train.state import NOISE_STREAM, SAMPLE_STREAM

JITTER_KEYS, DROPOUT_KEYS, POOL_KEYS = 0, 1, 2   # Sub-streams of NOISE_STREAM.


@struct.dataclass
class TranslationState:
  """Attributes:
    step: completed steps (int32).
    rng: raw key data of the run's base key.
    players: {name: PlayerState} of every network (e.g. generator, discriminator).
    pool: the history pools of fakes ({} for pix2pix; see `cnnjax.train.image_pool`).
    divergence: steps with non-finite metrics.
  """
  step: jax.Array
  rng: jax.Array
  players: dict[str, Any]
  pool: Any
  divergence: DivergenceRecord

  def step_key(self, stream: int) -> jax.Array:
    base = jax.random.fold_in(jax.random.wrap_key_data(self.rng), stream)
    return jax.random.fold_in(base, self.step)


def adam_with_linear_decay(optim: ml_collections.ConfigDict
                           ) -> optax.GradientTransformation:
  """Adam(lr, b1, b2) at a constant rate for `optim.constant_steps` steps, then decaying
  linearly to 0 over `optim.decay_steps` more (pix2pix / CycleGAN's `n_epochs` and
  `n_epochs_decay`, in steps; 0 after that). The schedule does not depend on
  `train.num_steps`, so a run extended by more steps keeps its past."""
  schedule = optax.linear_schedule(optim.lr, 0.0, max(optim.decay_steps, 1),
                                   transition_begin=optim.constant_steps)
  return optax.adam(schedule, b1=optim.b1, b2=optim.b2)


def draw_noise_keys(state: TranslationState, *, batch_size: int, streams: tuple[int, ...]
                    ) -> dict[str, jax.Array]:
  """Per-example raw keys (batch_size, 2) of each sub-stream, at global shape."""
  base = state.step_key(NOISE_STREAM)
  return {f"keys{stream}": jax.random.key_data(jax.random.split(
      jax.random.fold_in(base, stream), batch_size)) for stream in streams}


def apply_per_example(module: nn.Module, params: Any, x_bhwc: jax.Array,
                      keys_b: jax.Array | None, *, dropout: bool) -> jax.Array:
  """The generator on each example alone (InstanceNorm: the same numbers as a batch),
  with its own dropout key: independent of how the batch is split over devices."""
  if keys_b is None or not dropout:
    return module.apply({"params": params}, x_bhwc, train=False)

  def one(x_hwc, key):
    return module.apply({"params": params}, x_hwc[None], train=True, dropout=True,
                        rngs={"dropout": key})[0]
  return jax.vmap(one)(x_bhwc, keys_b)


def _translate(params: Any, x_bhwc: jax.Array, indices_b: jax.Array, seed_key: jax.Array,
               *, module: nn.Module, dropout: bool) -> jax.Array:
  keys = jax.vmap(jax.random.fold_in, (None, 0))(seed_key, indices_b)
  return apply_per_example(module, params, x_bhwc, keys if dropout else None,
                           dropout=dropout)


def make_translator(module: nn.Module, *, mesh: Mesh, dropout: bool, batch_size: int
                    ) -> Callable[[Any, np.ndarray, int], np.ndarray]:
  """`translate(params, images (N, H, W, C) in [-1, 1], seed) -> (N, H, W, C_out)` numpy,
  in chunks of `batch_size` (padded, sharded over `mesh`). With `dropout`, example i's
  dropout key is `fold_in(fold_in(key(seed), SAMPLE_STREAM), i)`: the same output for the
  same seed whatever the chunking or device count."""
  num_devices = mesh.size
  batch_size = -(-batch_size // num_devices) * num_devices
  jitted = jax.jit(functools.partial(_translate, module=module, dropout=dropout),
                   out_shardings=parallel.replicated(mesh),
                   compiler_options=parallel.compiler_options(mesh))
  sharding = parallel.data_sharded(mesh)

  def translate(params: Any, images_nhwc: np.ndarray, seed: int = 0) -> np.ndarray:
    seed_key = jax.random.fold_in(jax.random.key(seed), SAMPLE_STREAM)
    outputs = []
    for start in range(0, len(images_nhwc), batch_size):
      chunk = np.asarray(images_nhwc[start:start + batch_size], np.float32)
      valid = len(chunk)
      chunk = np.pad(chunk, ((0, batch_size - valid),) + ((0, 0),) * 3)
      indices = np.arange(start, start + batch_size, dtype=np.int32)
      out = jitted(params, jax.device_put(chunk, sharding),
                   jax.device_put(indices, sharding), seed_key)
      outputs.append(np.asarray(jax.device_get(out))[:valid])
    return np.concatenate(outputs)

  return translate


def triptychs(*rows_nhwc: np.ndarray) -> np.ndarray:
  """Side by side per example: (N, H, k W, 3) from k batches (grey ones made RGB)."""
  rgb = [np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x for x in rows_nhwc]
  return np.concatenate(rgb, axis=2)
