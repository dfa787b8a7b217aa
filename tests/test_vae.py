"""VAE model, likelihoods and bounds: hand computations, closed forms, IWAE properties."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from cnnjax.errors import ConfigError
from cnnjax.train.vae_bounds import example_bounds
from cnnjax.losses import vae as vae_losses
from cnnjax.models.vae import build_vae
from conftest import load_config

TINY = load_config("vae.py", "tiny")
LATENT_DIM = TINY.model.latent_dim


@functools.cache
def _tiny_vae(num_parameters: int = 1, num_classes: int = 0, resolution: int = 28,
              channels: int = 1):
  vae = build_vae(TINY.model, resolution=resolution, channels=channels,
                  num_parameters=num_parameters, num_classes=num_classes)
  images = jnp.zeros((1, resolution, resolution, channels))
  params = jax.jit(vae.init)(jax.random.key(0), images, jnp.zeros((1,), jnp.int32))
  return vae, params["params"]


def _digit_like_images(count: int, seed: int = 0) -> jax.Array:
  """Grey images in [-1, 1] with a bright blob: structure for the model to see."""
  rng = np.random.default_rng(seed)
  grid = np.stack(np.meshgrid(np.arange(28), np.arange(28), indexing="ij"), -1)
  centres = rng.uniform(8, 20, (count, 1, 1, 2))
  blob = np.exp(-np.sum((grid[None] - centres) ** 2, -1) / 20.0)
  return jnp.asarray(2.0 * blob[..., None] - 1.0, jnp.float32)


@pytest.mark.parametrize("resolution,channels,num_classes", [(28, 1, 0), (32, 3, 0),
                                                             (64, 3, 10)])
def test_encoder_and_decoder_shapes(resolution, channels, num_classes):
  vae = build_vae(TINY.model, resolution=resolution, channels=channels, num_parameters=2,
                  num_classes=num_classes)
  images = jnp.zeros((3, resolution, resolution, channels))
  labels = jnp.zeros((3,), jnp.int32)
  variables = jax.eval_shape(lambda: vae.init(jax.random.key(0), images, labels))
  mean, log_variance = jax.eval_shape(
      lambda v: vae.apply(v, images, labels, method="encode"), variables)
  assert mean.shape == log_variance.shape == (3, LATENT_DIM)
  decoded = jax.eval_shape(lambda v: vae.apply(v, jnp.zeros((3, LATENT_DIM)), labels,
                                               method="decode"), variables)
  assert decoded.shape == (3, resolution, resolution, channels, 2)


def test_kl_matches_the_closed_form_and_monte_carlo():
  rng = np.random.default_rng(0)
  mean = rng.normal(size=(5, 3))
  log_variance = rng.normal(size=(5, 3))
  kl = np.asarray(vae_losses.gaussian_kl_to_standard_normal(jnp.asarray(mean),
                                                            jnp.asarray(log_variance)))
  # KL(N(m, s^2) || N(0, 1)) = -log s + (s^2 + m^2) / 2 - 1/2, summed over dimensions.
  std = np.exp(0.5 * log_variance)
  expected = np.sum(-np.log(std) + (std ** 2 + mean ** 2) / 2 - 0.5, axis=-1)
  np.testing.assert_allclose(kl, expected, rtol=1e-5)
  # Monte-Carlo: E_q[log q(z) - log p(z)].
  noise = jax.random.normal(jax.random.key(0), (5, 100_000, 3))
  z = jnp.asarray(mean)[:, None] + jnp.asarray(std)[:, None] * noise
  log_q = vae_losses.diagonal_gaussian_log_prob(z, jnp.asarray(mean)[:, None],
                                                jnp.asarray(log_variance)[:, None])
  log_p = vae_losses.diagonal_gaussian_log_prob(z, jnp.zeros_like(z), jnp.zeros_like(z))
  np.testing.assert_allclose(np.mean(log_q - log_p, axis=1), expected, rtol=0.03, atol=0.02)


def test_elbo_matches_a_hand_computation():
  """Zero kernels: q(z | x) is the posterior layer's bias, p(x | z) the output bias."""
  vae, params = _tiny_vae()
  params = jax.tree.map(np.zeros_like, jax.device_get(params))
  posterior_bias = jnp.array([0.5, -1.0, 0.2, 0.0, -0.3, 0.4, -2.0, 0.1])
  params["encoder"]["posterior"]["bias"] = posterior_bias
  params["decoder"]["output"]["bias"] = jnp.array([0.7])
  images = _digit_like_images(2)
  likelihood = vae_losses.make_likelihood("bernoulli")
  targets = likelihood.targets(images)
  noise = jax.random.normal(jax.random.key(1), (2, LATENT_DIM))
  log_likelihood, kl = jax.jit(functools.partial(
      vae_losses.elbo_terms, vae, likelihood=likelihood))(params, targets, None, noise)

  x = (np.asarray(images, np.float64) + 1) / 2
  expected_log_likelihood = np.sum(x * 0.7 - np.log1p(np.exp(0.7)), axis=(1, 2, 3))
  mean, log_variance = np.split(np.asarray(posterior_bias, np.float64), 2)
  expected_kl = 0.5 * np.sum(mean ** 2 + np.exp(log_variance) - 1 - log_variance)
  np.testing.assert_allclose(log_likelihood, expected_log_likelihood, rtol=1e-5)
  np.testing.assert_allclose(kl, [expected_kl] * 2, rtol=1e-5)
  elbo_nats = -np.asarray(log_likelihood - kl)
  bits = vae_losses.bits_per_dim(jnp.asarray(elbo_nats), 28 * 28)
  np.testing.assert_allclose(bits, elbo_nats / (784 * math.log(2)), rtol=1e-6)


def test_gaussian_and_logistic_likelihoods_match_scipy():
  rng = np.random.default_rng(0)
  levels = rng.integers(0, 256, (2, 4, 4, 1))
  levels[0, 0, 0, 0], levels[0, 0, 1, 0] = 0, 255   # Both tails.
  x = levels * 2.0 / 255 - 1
  mean, log_scale = rng.uniform(-1, 1, x.shape), rng.uniform(-4, -1, x.shape)
  as_jnp = lambda *arrays: [jnp.asarray(a, jnp.float32) for a in arrays]
  gaussian = vae_losses.gaussian_log_prob(*as_jnp(mean, log_scale, x))
  expected = scipy.stats.norm.logpdf(x, mean, np.exp(log_scale)).sum(axis=(1, 2, 3))
  np.testing.assert_allclose(gaussian, expected, rtol=1e-5)

  logistic = vae_losses.discretized_logistic_log_prob(*as_jnp(mean, log_scale, x))
  cdf = lambda value: scipy.stats.logistic.cdf(value, mean, np.exp(log_scale))
  upper = np.where(levels == 255, 1.0, cdf(x + 1 / 255))
  lower = np.where(levels == 0, 0.0, cdf(x - 1 / 255))
  np.testing.assert_allclose(logistic, np.log(upper - lower).sum(axis=(1, 2, 3)),
                             rtol=1e-4)


def test_discretised_logistic_sums_to_one_over_the_levels():
  levels = jnp.linspace(-1, 1, 256).reshape(256, 1, 1, 1)
  log_probs = vae_losses.discretized_logistic_log_prob(
      jnp.full_like(levels, 0.3), jnp.full_like(levels, -2.5), levels)
  assert float(jnp.sum(jnp.exp(log_probs))) == pytest.approx(1.0, abs=1e-5)


def test_dynamic_binarisation_samples_the_grey_levels():
  grey = jnp.full((20_000,), 0.3)
  binary = vae_losses.binarize(grey, jax.random.key(0))
  assert set(np.unique(np.asarray(binary))) == {0.0, 1.0}
  assert float(jnp.mean(binary)) == pytest.approx(0.3, abs=0.02)
  likelihood = vae_losses.make_likelihood("bernoulli", binarize=True)
  images = jnp.linspace(-1, 1, 9).reshape(1, 3, 3, 1)
  targets = likelihood.targets(images, jax.random.key(0))
  assert set(np.unique(np.asarray(targets))) <= {0.0, 1.0}
  assert targets[0, 0, 0, 0] == 0 and targets[0, 2, 2, 0] == 1   # Grey 0 and 1 are certain.


def test_iwae_bound_grows_with_k_and_is_never_below_the_elbo():
  vae, params = _tiny_vae()
  likelihood = vae_losses.make_likelihood("bernoulli")
  images = jnp.tile(_digit_like_images(8), (8, 1, 1, 1))   # 8 images x 8 replicates.
  targets = likelihood.targets(images)
  iwae = jax.jit(lambda noise: vae_losses.iwae_bound(vae, params, targets, None, noise,
                                                     likelihood))
  key = jax.random.key(0)
  bounds = {k: np.asarray(iwae(jax.random.normal(jax.random.fold_in(key, k),
                                                 (len(images), k, LATENT_DIM))))
            for k in (1, 8, 64)}
  means = [bounds[k].mean() for k in sorted(bounds)]
  errors = [bounds[k].std() / math.sqrt(len(images)) for k in sorted(bounds)]
  for (low, high), error in zip(zip(means, means[1:]), errors):
    assert high > low - 3 * error
  assert means[-1] > means[0] + 3 * errors[0]   # The bound clearly tightens.
  log_likelihood, kl = jax.jit(functools.partial(
      vae_losses.elbo_terms, vae, likelihood=likelihood))(
          params, targets, None,
          jax.random.normal(jax.random.key(1), (len(images), LATENT_DIM)))
  elbo = np.asarray(log_likelihood - kl)
  elbo_error = elbo.std() / math.sqrt(len(images))
  for k, values in bounds.items():
    assert values.mean() >= elbo.mean() - 3 * (elbo_error + values.std() / math.sqrt(
        len(images))), k


def test_chunked_iwae_equals_the_bound_on_the_same_samples():
  vae, params = _tiny_vae()
  likelihood = vae_losses.make_likelihood("bernoulli", binarize=True)
  images, indices = _digit_like_images(3), jnp.arange(3, dtype=jnp.int32) + 10
  key_data = jax.random.key_data(jax.random.key(5))
  bounds = jax.jit(functools.partial(
      example_bounds, vae=vae, likelihood=likelihood, conditional=False,
      num_importance=7, chunk=3))(params, images, jnp.zeros(3, jnp.int32), indices,
                                  key_data)
  keys = [jax.random.fold_in(jax.random.key(5), int(index)) for index in indices]
  targets = jnp.concatenate([likelihood.targets(images[i:i + 1], jax.random.fold_in(key, 0))
                             for i, key in enumerate(keys)])
  noise = jnp.stack([jnp.concatenate([jax.random.normal(jax.random.fold_in(
      jax.random.fold_in(key, 2), chunk), (3, LATENT_DIM)) for chunk in range(3)])[:7]
                     for key in keys])
  expected = jax.jit(functools.partial(vae_losses.iwae_bound, vae, likelihood=likelihood))(
      params, targets, None, noise)
  np.testing.assert_allclose(bounds["iwae"], expected, rtol=1e-5)
  assert np.all(np.isfinite(bounds["elbo"]))


def test_reparameterisation_gradients_are_finite_and_non_zero():
  vae, params = _tiny_vae()
  likelihood = vae_losses.make_likelihood("bernoulli")
  images = likelihood.targets(_digit_like_images(4))
  noise = jax.random.normal(jax.random.key(1), (4, LATENT_DIM))

  def reconstruction(params):
    log_likelihood, _ = vae_losses.elbo_terms(vae, params, images, None, noise, likelihood)
    return -jnp.mean(log_likelihood)

  grads = jax.jit(jax.grad(reconstruction))(params)
  leaves = jax.tree.leaves(grads)
  assert all(np.all(np.isfinite(leaf)) for leaf in leaves)
  # The encoder reaches the reconstruction term only through z = mean + std * noise.
  encoder_norm = float(jnp.sqrt(sum(jnp.sum(g ** 2)
                                    for g in jax.tree.leaves(grads["encoder"]))))
  assert encoder_norm > 0
  assert float(jnp.abs(grads["encoder"]["posterior"]["kernel"]).max()) > 0


def test_conditional_decoder_depends_on_the_label():
  vae, params = _tiny_vae(num_classes=10)
  latents = jnp.tile(jax.random.normal(jax.random.key(0), (1, LATENT_DIM)), (2, 1))
  decoded = jax.jit(functools.partial(vae.apply, method="decode"))(
      {"params": params}, latents, jnp.array([3, 7]))
  assert float(jnp.max(jnp.abs(decoded[0] - decoded[1]))) > 1e-4


def test_kl_warmup_is_linear():
  schedule = lambda step: float(vae_losses.kl_weight(jnp.asarray(step), beta=4.0,
                                                     warmup_steps=100))
  assert [schedule(s) for s in (0, 50, 100, 200)] == [0.0, 2.0, 4.0, 4.0]
  assert float(vae_losses.kl_weight(jnp.asarray(0), beta=2.0, warmup_steps=0)) == 2.0


def test_likelihood_and_config_errors():
  with pytest.raises(ConfigError, match="likelihood.name"):
    vae_losses.make_likelihood("poisson")
  with pytest.raises(ConfigError, match="scale"):
    vae_losses.make_likelihood("gaussian", gaussian_scale=-1.0)
  assert vae_losses.make_likelihood("gaussian").num_parameters == 2
  assert vae_losses.make_likelihood("gaussian", gaussian_scale=0.1).num_parameters == 1
  for variant in ("", "beta", "cvae", "shapes", "cvae,tiny", "beta,tiny"):
    assert load_config("vae.py", variant).experiment == "vae"
  with pytest.raises(ValueError, match="Unknown variant"):
    load_config("vae.py", "huge")
