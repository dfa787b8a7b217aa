"""GAN losses against hand-computed values."""

import math

import jax.numpy as jnp
import pytest

from cnnjax.errors import ConfigError
from cnnjax.losses import gan

REAL_LOGITS = jnp.array([0.0, 2.0])
FAKE_LOGITS = jnp.array([0.0, -1.0])


def _log1p_exp(x: float) -> float:
  return math.log(1.0 + math.exp(x))


def test_minimax_discriminator_loss_is_the_articles_l_d():
  # -log D(x) - log(1 - D(G(z))) with D = sigmoid, averaged over the batch.
  sigmoid = lambda x: 1.0 / (1.0 + math.exp(-x))
  expected = (-(math.log(sigmoid(0.0)) + math.log(sigmoid(2.0))) / 2
              - (math.log(1 - sigmoid(0.0)) + math.log(1 - sigmoid(-1.0))) / 2)
  got = gan.minimax_discriminator_loss(REAL_LOGITS, FAKE_LOGITS)
  assert float(got) == pytest.approx(expected, rel=1e-6)


def test_non_saturating_generator_loss():
  expected = (_log1p_exp(-0.0) + _log1p_exp(1.0)) / 2  # -log sigmoid(l)
  assert float(gan.non_saturating_generator_loss(FAKE_LOGITS)) == pytest.approx(
      expected, rel=1e-6)


def test_minimax_generator_loss():
  expected = -(_log1p_exp(0.0) + _log1p_exp(-1.0)) / 2  # log(1 - sigmoid(l))
  assert float(gan.minimax_generator_loss(FAKE_LOGITS)) == pytest.approx(
      expected, rel=1e-6)


def test_losses_are_finite_for_extreme_logits():
  logits = jnp.array([-1e4, 1e4])
  assert jnp.isfinite(gan.minimax_discriminator_loss(logits, logits))
  assert jnp.isfinite(gan.non_saturating_generator_loss(logits))


def test_unknown_loss_is_a_config_error():
  with pytest.raises(ConfigError, match="loss.name"):
    gan.get_gan_loss("nonsaturating")
