"""Exponential moving average (EMA) of generator parameters.

Samples and metrics of GANs are usually better from a running average of the
generator's weights than from the weights themselves (Karras et al. 2018; Yazici et al.
2019; BigGAN). After each generator update,

  ema <- decay_t * ema + (1 - decay_t) * params,

where decay_t = 0 before `start_step` (the average just tracks the weights, as BigGAN's
`ema_start`), then `decay`, or with `warmup` min(decay, (1 + n) / (10 + n)) with
n = step - start_step (TensorFlow's `ExponentialMovingAverage(num_updates=n)`), so
that early, random weights are forgotten quickly.

The functions are pure and work on any pytree (params; BatchNorm statistics too, if
wanted), inside `jit`/`shard_map`: replicated inputs give replicated outputs.
"""

from typing import Any

import jax
import jax.numpy as jnp


def init_ema(params: Any) -> Any:
  """The average's initial value: a copy of `params`."""
  return jax.tree.map(jnp.array, params)


def ema_decay(step: jax.Array | int, *, decay: float, start_step: int = 0,
              warmup: bool = False) -> jax.Array:
  """The decay decay_t used at update number `step` (a float32 scalar).

  Args:
    step: number of generator updates done, counting the one just made (1 after the
      first update); traceable.
    decay: the long-run decay, e.g. 0.999 or 0.9999.
    start_step: before this step the average equals the weights (decay_t = 0).
    warmup: ramp the decay up as min(decay, (1 + n) / (10 + n)), n = step - start_step.
  """
  updates_since_start = jnp.asarray(step, jnp.float32) - start_step
  decay_t = jnp.asarray(decay, jnp.float32)
  if warmup:
    decay_t = jnp.minimum(decay_t, (1.0 + updates_since_start) / (10.0 + updates_since_start))
  return jnp.where(updates_since_start < 0, 0.0, decay_t)


def ema_update(ema_params: Any, params: Any, step: jax.Array | int, *, decay: float,
               start_step: int = 0, warmup: bool = False) -> Any:
  """One EMA step: decay_t * ema + (1 - decay_t) * params, leaf by leaf.

  Args:
    ema_params: the current average (same tree structure as `params`).
    params: the generator's parameters after its update.
    step, decay, start_step, warmup: see `ema_decay`.

  Returns:
    The new average, with the dtypes of `ema_params`.
  """
  decay_t = ema_decay(step, decay=decay, start_step=start_step, warmup=warmup)
  return jax.tree.map(
      lambda average, value: (decay_t * average + (1.0 - decay_t) * value).astype(
          average.dtype), ema_params, params)
