"""The projector on a toy differentiable generator (not yet on a trained GAN run)."""

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.editing import inversion
from cnnjax.runs.opening import open_run

_W = jax.random.normal(jax.random.key(0), (4, 16))
_S = inversion.ProjectorSettings(num_steps=200)


def _gen(z):
  return jnp.tanh(z @ _W).reshape(-1, 4, 4, 1)


def _feat(x):
  return x.reshape(x.shape[0], -1)


def _project(targets, masks, seed=2):
  fn = jax.jit(lambda t, m: inversion.project(
      jax.random.key(seed), t, m, jnp.zeros((8, 4)), jnp.arange(8), generate=_gen,
      features=_feat, encode=None, s=_S))
  return fn(targets, masks)


def test_inversion_of_g_z_recovers_the_image_and_is_deterministic():
  targets = _gen(jax.random.normal(jax.random.key(1), (8, 4)))
  masks = jnp.ones((8, 4, 4, 1))
  z, loss = _project(targets, masks)
  assert z.shape == (8, 4) and loss.shape == (8,)
  before = float(jnp.mean((_gen(jnp.zeros((8, 4))) - targets) ** 2))
  after = float(jnp.mean((_gen(z) - targets) ** 2))
  assert after < 0.05 * before
  np.testing.assert_array_equal(z, _project(targets, masks)[0])


def test_masked_loss_ignores_unknown_pixels_and_composite_keeps_known():
  targets = _gen(jax.random.normal(jax.random.key(1), (8, 4)))
  masks = jnp.zeros((8, 4, 4, 1)).at[:, :2].set(1.0)
  garbage = targets.at[:, 2:].set(5.0)
  np.testing.assert_allclose(_project(targets, masks)[0], _project(garbage, masks)[0],
                             rtol=1e-5, atol=1e-5)
  out = inversion.composite(targets, _gen(jnp.zeros((8, 4))), masks)
  np.testing.assert_array_equal(out[:, :2], targets[:, :2])


def test_inverting_g_z_of_the_tiny_gan_beats_a_random_z(tiny_gan_run):
  run = open_run(str(tiny_gan_run))
  gen = inversion.bind_generator(run.program, run.state)
  dim = run.program.latent_dim
  z_true = jax.random.normal(jax.random.key(3), (8, dim))
  targets = jax.jit(gen)(z_true)
  z0 = jax.random.normal(jax.random.key(4), (8, dim))
  s = inversion.ProjectorSettings(num_steps=60, feature_weight=0.0)
  z, loss = jax.jit(lambda t: inversion.project(
      jax.random.key(5), t, jnp.ones(t.shape[:3] + (1,)), z0, jnp.arange(8),
      generate=gen, features=_feat, encode=None, s=s))(targets)
  assert jnp.all(jnp.isfinite(loss))
  before = float(jnp.mean((jax.jit(gen)(z0) - targets) ** 2))
  after = float(jnp.mean((jax.jit(gen)(z) - targets) ** 2))
  assert after < 0.5 * before
