"""GAN objectives on discriminator logits.

The article's discriminator loss is the minimax
  L_D = -E_x[log D(x)] - E_z[log(1 - D(G(z)))],
and its generator loss the non-saturating L_G = -E_z[log D(G(z))]. With D = sigmoid(logit)
both are softplus expressions of the logits, which is how they are computed here (stable
for any logit). All losses are means over the (per-device) batch.

The GAN family's other objectives read the logits as unbounded critic scores: hinge
(Lim & Ye 2017; SNGAN, BigGAN), Wasserstein (Arjovsky et al. 2017; add the gradient
penalty of `cnnjax.losses.regularizers`, WGAN-GP) and least squares (LSGAN, Mao et al.
2017, with targets a=0, b=c=1). AC-GAN's auxiliary classification term is
`auxiliary_classifier_loss`, added by the step to both players' objectives.
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


def hinge_discriminator_loss(real_logits_b: jax.Array,
                             fake_logits_b: jax.Array) -> jax.Array:
  """L_D = relu(1 - D(x)) + relu(1 + D(G(z))), averaged over the batch."""
  return jnp.mean(jax.nn.relu(1.0 - real_logits_b)) + jnp.mean(
      jax.nn.relu(1.0 + fake_logits_b))


def wasserstein_discriminator_loss(real_logits_b: jax.Array,
                                   fake_logits_b: jax.Array) -> jax.Array:
  """L_D = D(G(z)) - D(x): the critic's negated Wasserstein-1 estimate (no penalty)."""
  return jnp.mean(fake_logits_b) - jnp.mean(real_logits_b)


def wasserstein_generator_loss(fake_logits_b: jax.Array) -> jax.Array:
  """L_G = -D(G(z)): the generator's objective of both WGAN and the hinge loss."""
  return -jnp.mean(fake_logits_b)


hinge_generator_loss = wasserstein_generator_loss


def least_squares_discriminator_loss(real_logits_b: jax.Array,
                                     fake_logits_b: jax.Array) -> jax.Array:
  """LSGAN: L_D = 1/2 (D(x) - 1)^2 + 1/2 D(G(z))^2, averaged over the batch."""
  return 0.5 * jnp.mean(jnp.square(real_logits_b - 1.0)) + 0.5 * jnp.mean(
      jnp.square(fake_logits_b))


def least_squares_generator_loss(fake_logits_b: jax.Array) -> jax.Array:
  """LSGAN: L_G = 1/2 (D(G(z)) - 1)^2, averaged over the batch."""
  return 0.5 * jnp.mean(jnp.square(fake_logits_b - 1.0))


def auxiliary_classifier_loss(class_logits_bk: jax.Array,
                              labels_b: jax.Array) -> jax.Array:
  """AC-GAN's class term: softmax cross-entropy of (B, K) logits vs int labels (B,), mean."""
  log_probs = jax.nn.log_softmax(class_logits_bk.astype(jnp.float32), axis=-1)
  return -jnp.mean(jnp.take_along_axis(log_probs, labels_b[:, None], axis=-1))


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
    "hinge": GanLoss(hinge_discriminator_loss, hinge_generator_loss),
    "wasserstein": GanLoss(wasserstein_discriminator_loss, wasserstein_generator_loss),
    "least_squares": GanLoss(least_squares_discriminator_loss,
                             least_squares_generator_loss),
}


def get_gan_loss(name: str) -> GanLoss:
  """Returns the GAN objective called `name` (config field `loss.name`)."""
  if name not in GAN_LOSSES:
    raise ConfigError(f"Unknown loss.name {name!r}: use one of "
                      f"{', '.join(sorted(GAN_LOSSES))}.")
  return GAN_LOSSES[name]
