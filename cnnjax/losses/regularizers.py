"""Gradient regularisers of the discriminator (critic): WGAN-GP and R1.

Both take a closure `critic_fn(images_bhwc) -> logits_b` so that parameters, labels and
BatchNorm / spectral-norm collections stay with the caller. To train the discriminator
on a penalty, build the closure inside the discriminator's loss function, over the
parameters being differentiated; the penalty is then differentiable with respect to
them (double back-propagation).

Both penalties differentiate `sum_i critic_fn(images)_i` with respect to the images,
which gives every example's own input gradient only if the critic treats examples
independently: evaluate it without training-mode BatchNorm (Gulrajani et al. use no
BatchNorm in the critic; spectral norm and LayerNorm are fine). Training-mode BatchNorm
couples the examples through the batch statistics, and the result is then the gradient
of the summed logits instead.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import optax

CriticFn = Callable[[jax.Array], jax.Array]


def _input_gradients(critic_fn: CriticFn, images_bhwc: jax.Array) -> jax.Array:
  """d(sum of logits) / d(images), flattened per example: (B, H*W*C)."""
  gradients = jax.grad(lambda x: jnp.sum(critic_fn(x).astype(jnp.float32)))(images_bhwc)
  return gradients.reshape(gradients.shape[0], -1).astype(jnp.float32)


def interpolation_weights(key: jax.Array, batch_size: int) -> jax.Array:
  """WGAN-GP's per-example mixing weights alpha ~ U[0, 1): (B,).

  `gradient_penalty` draws exactly these (a documented contract, for tests and logs).

  Args:
    key: one PRNG key, drawing all B weights; or B keys (B,), one weight from each
      (split from the step's key at the global batch size and sharded like the batch,
      the weights do not depend on the number of devices). Raw uint32 keys work too.
    batch_size: B.
  """
  if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.wrap_key_data(key)
  if key.ndim == 0:
    return jax.random.uniform(key, (batch_size,), jnp.float32)
  if key.shape != (batch_size,):
    raise ValueError(f"Need one key or {batch_size} keys, got shape {key.shape}.")
  return jax.vmap(lambda example_key: jax.random.uniform(example_key, (), jnp.float32))(key)


def gradient_penalty(critic_fn: CriticFn, real_images_bhwc: jax.Array,
                     fake_images_bhwc: jax.Array, key: jax.Array, *,
                     target_norm: float = 1.0) -> jax.Array:
  """WGAN-GP (Gulrajani et al. 2017): E[(||grad_x D(x_hat)||_2 - target_norm)^2].

  x_hat = alpha * real + (1 - alpha) * fake with alpha = `interpolation_weights(key, B)`,
  one alpha per example. The caller multiplies by the penalty weight (lambda = 10 in
  the paper) and adds it to the critic's loss. A zero gradient has norm 0 and a zero
  (not NaN) derivative.

  Args:
    critic_fn: images (B, H, W, C) -> logits (B,); see the module docstring.
    real_images_bhwc: real images (B, H, W, C).
    fake_images_bhwc: generated images (B, H, W, C), normally under `stop_gradient`.
    key: PRNG key(s) of the interpolation weights, see `interpolation_weights` (use
      new ones every step).
    target_norm: the gradient norm the penalty pulls towards (1 for a 1-Lipschitz
      critic).

  Returns:
    The penalty, a float32 scalar averaged over the batch.
  """
  alpha = interpolation_weights(key, real_images_bhwc.shape[0])
  alpha = alpha.reshape((-1,) + (1,) * (real_images_bhwc.ndim - 1))
  interpolates = (alpha * real_images_bhwc.astype(jnp.float32)
                  + (1.0 - alpha) * fake_images_bhwc.astype(jnp.float32))
  gradients_bd = _input_gradients(critic_fn, interpolates.astype(real_images_bhwc.dtype))
  norms_b = optax.safe_norm(gradients_bd, 0.0, axis=1)
  return jnp.mean(jnp.square(norms_b - target_norm))


def r1_penalty(critic_fn: CriticFn, real_images_bhwc: jax.Array) -> jax.Array:
  """R1 (Mescheder et al. 2018): 1/2 E_x ||grad_x D(x)||^2 on real images.

  The caller multiplies by gamma (the paper's R1 term is gamma/2 E||grad||^2, so this
  function already includes the 1/2) and adds it to the discriminator's loss.

  Args:
    critic_fn: images (B, H, W, C) -> logits (B,); see the module docstring.
    real_images_bhwc: real images (B, H, W, C).

  Returns:
    The penalty, a float32 scalar averaged over the batch.
  """
  gradients_bd = _input_gradients(critic_fn, real_images_bhwc)
  return 0.5 * jnp.mean(jnp.sum(jnp.square(gradients_bd), axis=1))
