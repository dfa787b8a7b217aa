"""VAE objectives: pixel likelihoods, the analytic KL, the ELBO and the IWAE bound.

Images arrive in [-1, 1] (the pipeline's contract: x = 2 * byte / 255 - 1). Each
likelihood maps them to its own targets:

* `bernoulli`: targets in [0, 1] ((x + 1) / 2); with `binarize`, each is replaced by a
  Bernoulli sample of that grey level (dynamic binarisation, a new sample each time).
  Without it, grey targets give the "continuous" cross-entropy, not a normalised
  likelihood. Bits per dimension are those of the binarised images.
* `gaussian`: targets stay in [-1, 1]; the scale is fixed (`gaussian_scale`) or learned
  per pixel (`gaussian_scale=None`: the decoder outputs a log-scale too). A density:
  bits per dimension are reported on the 8-bit scale [0, 256) (adding ln 127.5 nats per
  dimension), comparable with discrete likelihoods only for dequantised data.
* `logistic`: the discretised logistic of PixelCNN++ (Salimans et al., 2017) over
  `num_bins` levels of [-1, 1]; a proper probability of 8-bit images.

All log-probabilities are in nats, summed over pixels: (B,) per image.
"""

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax.errors import ConfigError

LIKELIHOODS = ("bernoulli", "gaussian", "logistic")
_MIN_LOG_SCALE = -7.0   # Floor of learned log-scales, as in PixelCNN++.
_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)


def _sum_per_image(values_b: jax.Array) -> jax.Array:
  return jnp.sum(values_b.reshape(values_b.shape[0], -1), axis=-1)


def unit_interval(images_pm1: jax.Array) -> jax.Array:
  """[-1, 1] -> [0, 1]."""
  return (images_pm1 + 1.0) * 0.5


def binarize(images_01: jax.Array, key: jax.Array) -> jax.Array:
  """One Bernoulli sample per pixel of grey levels in [0, 1]: {0., 1.}, same shape."""
  return jax.random.bernoulli(key, images_01).astype(images_01.dtype)


def bernoulli_log_prob(logits_bhwc: jax.Array, targets_bhwc: jax.Array) -> jax.Array:
  """sum x log sigmoid(l) + (1 - x) log sigmoid(-l) = sum x l - softplus(l): (B,)."""
  return _sum_per_image(targets_bhwc * logits_bhwc - jax.nn.softplus(logits_bhwc))


def gaussian_log_prob(mean_bhwc: jax.Array, log_scale_bhwc: jax.Array,
                      targets_bhwc: jax.Array) -> jax.Array:
  """Diagonal Gaussian log-density of the targets, summed per image: (B,)."""
  z = (targets_bhwc - mean_bhwc) * jnp.exp(-log_scale_bhwc)
  return _sum_per_image(-0.5 * z * z - log_scale_bhwc - _HALF_LOG_TWO_PI)


def discretized_logistic_log_prob(mean_bhwc: jax.Array, log_scale_bhwc: jax.Array,
                                  targets_bhwc: jax.Array, num_bins: int = 256
                                  ) -> jax.Array:
  """log P(x) of a logistic discretised to `num_bins` levels of [-1, 1]: (B,).

  Level x gets the logistic mass of [x - h, x + h] with h = 1 / (num_bins - 1); the
  lowest and highest levels get the tails. log(sigmoid(a) - sigmoid(b)) is computed as
  log_sigmoid(a) + log_sigmoid(-b) + log(1 - exp(b - a)), exact and stable.

  Args:
    mean_bhwc, log_scale_bhwc: logistic location and log-scale per pixel.
    targets_bhwc: images in [-1, 1] on the `num_bins` grid.
    num_bins: number of levels (256 for 8-bit images).
  """
  half_bin = 1.0 / (num_bins - 1)
  inv_scale = jnp.exp(-log_scale_bhwc)
  upper = (targets_bhwc - mean_bhwc + half_bin) * inv_scale
  lower = (targets_bhwc - mean_bhwc - half_bin) * inv_scale
  log_upper_cdf = jax.nn.log_sigmoid(upper)            # Lowest level: P(X <= x + h).
  log_lower_survival = jax.nn.log_sigmoid(-lower)      # Highest level: P(X > x - h).
  log_mass = (log_upper_cdf + log_lower_survival
              + jnp.log(-jnp.expm1(-2.0 * half_bin * inv_scale)))
  log_prob = jnp.where(targets_bhwc < -1.0 + half_bin, log_upper_cdf,
                       jnp.where(targets_bhwc > 1.0 - half_bin, log_lower_survival,
                                 log_mass))
  return _sum_per_image(log_prob)


def gaussian_kl_to_standard_normal(mean_bz: jax.Array,
                                   log_variance_bz: jax.Array) -> jax.Array:
  """KL(N(mean, diag exp(log_variance)) || N(0, I)) in closed form: (B,)."""
  return 0.5 * jnp.sum(jnp.square(mean_bz) + jnp.exp(log_variance_bz) - 1.0
                       - log_variance_bz, axis=-1)


def diagonal_gaussian_log_prob(latents_bkz: jax.Array, mean_bkz: jax.Array,
                               log_variance_bkz: jax.Array) -> jax.Array:
  """log N(z; mean, diag exp(log_variance)), summed over the last axis: (B, k)."""
  return jnp.sum(-0.5 * (jnp.square(latents_bkz - mean_bkz) * jnp.exp(-log_variance_bkz)
                         + log_variance_bkz) - _HALF_LOG_TWO_PI, axis=-1)


def log_mean_exp(values: jax.Array, axis: int = -1) -> jax.Array:
  """log(mean(exp(values))) along `axis`, stable for any magnitude."""
  return jax.nn.logsumexp(values, axis=axis) - math.log(values.shape[axis])


def kl_weight(step: jax.Array, *, beta: float, warmup_steps: int) -> jax.Array:
  """The KL weight of a step: beta * min(1, step / warmup_steps) (beta if no warm-up)."""
  if warmup_steps <= 0:
    return jnp.asarray(beta, jnp.float32)
  return beta * jnp.minimum(1.0, step.astype(jnp.float32) / warmup_steps)


def bits_per_dim(nats_per_image: jax.Array, num_dims: int,
                 nats_offset_per_dim: float = 0.0) -> jax.Array:
  """Negative log-likelihood in nats per image -> bits per pixel channel."""
  return (nats_per_image / num_dims + nats_offset_per_dim) / math.log(2.0)


@dataclasses.dataclass(frozen=True)
class Likelihood:
  """A pixel likelihood p(x | z) and the mapping of [-1, 1] images to its targets.

  Attributes:
    name: one of `LIKELIHOODS`.
    binarize: (bernoulli) binarise targets by sampling.
    gaussian_scale: (gaussian) the fixed standard deviation on the [-1, 1] scale, or
      None to learn one per pixel.
    num_bins: (logistic) levels of the discretisation.
  """
  name: str
  binarize: bool = False
  gaussian_scale: float | None = None
  num_bins: int = 256

  @property
  def num_parameters(self) -> int:
    """Decoder outputs per pixel channel."""
    learned_scale = self.name == "logistic" or (
        self.name == "gaussian" and self.gaussian_scale is None)
    return 2 if learned_scale else 1

  @property
  def nats_offset_per_dim(self) -> float:
    """Added per dimension to express a density on [-1, 1] on the 8-bit scale."""
    return math.log(127.5) if self.name == "gaussian" else 0.0

  def targets(self, images_pm1: jax.Array, key: jax.Array | None = None) -> jax.Array:
    """What the likelihood scores, from images in [-1, 1] (`key`: binarisation)."""
    if self.name != "bernoulli":
      return images_pm1
    images_01 = unit_interval(images_pm1)
    return binarize(images_01, key) if self.binarize else images_01

  def encoder_inputs(self, targets_bhwc: jax.Array) -> jax.Array:
    """The encoder sees the targets (binarised, if so) back in [-1, 1]."""
    return targets_bhwc * 2.0 - 1.0 if self.name == "bernoulli" else targets_bhwc

  def _location_and_log_scale(self, params_bhwcp: jax.Array):
    location = params_bhwcp[..., 0]
    if self.num_parameters == 1:
      return location, jnp.full_like(location, math.log(self.gaussian_scale or 1.0))
    return location, jnp.maximum(params_bhwcp[..., 1], _MIN_LOG_SCALE)

  def log_prob(self, params_bhwcp: jax.Array, targets_bhwc: jax.Array) -> jax.Array:
    """log p(x | z) in nats per image (B,), from decoder outputs (B, H, W, C, P)."""
    if self.name == "bernoulli":
      return bernoulli_log_prob(params_bhwcp[..., 0], targets_bhwc)
    location, log_scale = self._location_and_log_scale(params_bhwcp)
    if self.name == "gaussian":
      return gaussian_log_prob(location, log_scale, targets_bhwc)
    return discretized_logistic_log_prob(location, log_scale, targets_bhwc, self.num_bins)

  def mean_image(self, params_bhwcp: jax.Array) -> jax.Array:
    """The decoder's mean image (B, H, W, C) in [-1, 1], for grids and samples."""
    if self.name == "bernoulli":
      return 2.0 * jax.nn.sigmoid(params_bhwcp[..., 0]) - 1.0
    return jnp.clip(params_bhwcp[..., 0], -1.0, 1.0)


def make_likelihood(name: str, *, binarize: bool = False,
                    gaussian_scale: float | None = None, num_bins: int = 256) -> Likelihood:
  """The `Likelihood` called `name`; see `Likelihood` for the arguments.

  Raises:
    ConfigError: unknown name or invalid hyperparameters.
  """
  if name not in LIKELIHOODS:
    raise ConfigError(f"Unknown likelihood.name {name!r}: use one of "
                      f"{', '.join(LIKELIHOODS)}.")
  if gaussian_scale is not None and gaussian_scale <= 0:
    raise ConfigError(f"The Gaussian scale must be positive, got {gaussian_scale}.")
  if num_bins < 2:
    raise ConfigError(f"The logistic needs at least 2 bins, got {num_bins}.")
  return Likelihood(name=name, binarize=binarize, gaussian_scale=gaussian_scale,
                    num_bins=num_bins)


def reparameterize(mean_bz: jax.Array, log_variance_bz: jax.Array,
                   noise_bz: jax.Array) -> jax.Array:
  """z = mean + exp(log_variance / 2) * noise, differentiable in mean and variance."""
  return mean_bz + jnp.exp(0.5 * log_variance_bz) * noise_bz


def elbo_terms(vae: nn.Module, params: Any, targets_bhwc: jax.Array,
               labels_b: jax.Array | None, noise_bz: jax.Array,
               likelihood: Likelihood) -> tuple[jax.Array, jax.Array]:
  """The two terms of the single-sample ELBO = log p(x | z) - KL(q(z | x) || p(z)).

  Args:
    vae: a `cnnjax.models.vae.ConvVae`.
    params: its parameters.
    targets_bhwc: `likelihood.targets` of the images.
    labels_b: class labels (conditional VAE) or None.
    noise_bz: standard normal noise of the reparameterisation (B, Z).
    likelihood: the pixel likelihood.

  Returns:
    (log_likelihood (B,), kl (B,)) in nats per image.
  """
  variables = {"params": params}
  mean_bz, log_variance_bz = vae.apply(variables, likelihood.encoder_inputs(targets_bhwc),
                                       labels_b, method="encode")
  latents_bz = reparameterize(mean_bz, log_variance_bz, noise_bz)
  decoded = vae.apply(variables, latents_bz, labels_b, method="decode")
  return (likelihood.log_prob(decoded, targets_bhwc),
          gaussian_kl_to_standard_normal(mean_bz, log_variance_bz))


def importance_log_weights(vae: nn.Module, params: Any, targets_bhwc: jax.Array,
                           labels_b: jax.Array | None, mean_bz: jax.Array,
                           log_variance_bz: jax.Array, noise_bkz: jax.Array,
                           likelihood: Likelihood) -> jax.Array:
  """log p(x, z_i) - log q(z_i | x) for k posterior samples per image: (B, k).

  Args:
    mean_bz, log_variance_bz: the encoder's q(z | x) of the images (B, Z).
    noise_bkz: standard normal noise (B, k, Z) of the k samples.
    Others: as in `elbo_terms`.
  """
  batch, num_samples, latent_dim = noise_bkz.shape
  mean_bkz, log_variance_bkz = mean_bz[:, None], log_variance_bz[:, None]
  latents_bkz = reparameterize(mean_bkz, log_variance_bkz, noise_bkz)
  repeat = lambda x: None if x is None else jnp.repeat(x, num_samples, axis=0)
  decoded = vae.apply({"params": params}, latents_bkz.reshape(-1, latent_dim),
                      repeat(labels_b), method="decode")
  log_likelihood_bk = likelihood.log_prob(decoded, repeat(targets_bhwc)).reshape(
      batch, num_samples)
  log_prior_bk = diagonal_gaussian_log_prob(latents_bkz, jnp.zeros_like(latents_bkz),
                                            jnp.zeros_like(latents_bkz))
  log_posterior_bk = diagonal_gaussian_log_prob(latents_bkz, mean_bkz, log_variance_bkz)
  return log_likelihood_bk + log_prior_bk - log_posterior_bk


def iwae_bound(vae: nn.Module, params: Any, targets_bhwc: jax.Array,
               labels_b: jax.Array | None, noise_bkz: jax.Array,
               likelihood: Likelihood) -> jax.Array:
  """The k-sample importance-weighted bound (Burda et al., 2016) on log p(x): (B,).

  log (1/k) sum_i p(x, z_i) / q(z_i | x), z_i ~ q(z | x); k = 1 is the ELBO estimate
  with a Monte-Carlo KL, and the bound tightens (in expectation) as k grows.
  """
  mean_bz, log_variance_bz = vae.apply(
      {"params": params}, likelihood.encoder_inputs(targets_bhwc), labels_b,
      method="encode")
  return log_mean_exp(importance_log_weights(vae, params, targets_bhwc, labels_b, mean_bz,
                                             log_variance_bz, noise_bkz, likelihood))
