"""GAN objectives on discriminator logits.

The article's discriminator loss is the minimax
  L_D = -E_x[log D(x)] - E_z[log(1 - D(G(z)))],
and its generator loss the non-saturating L_G = -E_z[log D(G(z))]. With D = sigmoid(logit)
both are softplus expressions of the logits, which is how they are computed here (stable
for any logit). All losses are means over the (per-device) batch.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from cnnjax.errors import ConfigError


def minimax_discriminator_loss(real_logits_b: jax.Array,
                               fake_logits_b: jax.Array) -> jax.Array:
  """L_D = -log D(x) - log(1 - D(G(z))), averaged over the batch."""
  return jnp.mean(jax.nn.softplus(-real_logits_b)) + jnp.mean(
      jax.nn.softplus(fake_logits_b))


def non_saturating_generator_loss(fake_logits_b: jax.Array) -> jax.Array:
  """L_G = -log D(G(z)): strong gradients while D rejects the samples."""
  return jnp.mean(jax.nn.softplus(-fake_logits_b))


def minimax_generator_loss(fake_logits_b: jax.Array) -> jax.Array:
  """L_G = log(1 - D(G(z))): the original zero-sum objective (saturates early on)."""
  return -jnp.mean(jax.nn.softplus(fake_logits_b))


class GanLoss(NamedTuple):
  """The two players' objectives.

  Attributes:
    discriminator: (real_logits (B,), fake_logits (B,)) -> scalar loss.
    generator: fake_logits (B,) -> scalar loss.
  """
  discriminator: Callable[[jax.Array, jax.Array], jax.Array]
  generator: Callable[[jax.Array], jax.Array]


GAN_LOSSES: dict[str, GanLoss] = {
    "non_saturating": GanLoss(minimax_discriminator_loss,
                              non_saturating_generator_loss),
    "minimax": GanLoss(minimax_discriminator_loss, minimax_generator_loss),
}


def get_gan_loss(name: str) -> GanLoss:
  """Returns the GAN objective called `name` (config field `loss.name`)."""
  if name not in GAN_LOSSES:
    raise ConfigError(f"Unknown loss.name {name!r}: use one of "
                      f"{', '.join(sorted(GAN_LOSSES))}.")
  return GAN_LOSSES[name]
