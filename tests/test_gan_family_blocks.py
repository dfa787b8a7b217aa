"""The GAN family's building blocks: losses, penalties, spectral norm, conditioning,
SNGAN, DiffAugment and the EMA, each against an independent computation."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from cnnjax.augment import diffaugment
from cnnjax.errors import ConfigError
from cnnjax.losses import gan, regularizers
from cnnjax.models import conditioning, sngan
from cnnjax.models.spectral_norm import spectral_normalized
from cnnjax.train import ema, parallel

REAL_LOGITS = jnp.array([0.5, 2.0, -1.5])
FAKE_LOGITS = jnp.array([-2.0, 0.25, 1.0])


def _init_key(seed: int) -> jax.Array:
  """An "rbg" key: XLA compiles initialisers ~6x faster with it than with threefry."""
  return jax.random.key(seed, impl="rbg")


def _normal(seed: int, shape: tuple[int, ...]) -> jax.Array:
  """Test data from numpy (no compilation)."""
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


@pytest.mark.parametrize("name,d_expected,g_expected", [
    # D: mean relu(1 - r) = (0.5 + 0 + 2.5)/3, mean relu(1 + f) = (0 + 1.25 + 2)/3.
    ("hinge", 3.0 / 3 + 3.25 / 3, 0.75 / 3),  # G: -mean(f) = 0.75/3.
    ("wasserstein", -0.75 / 3 - 1.0 / 3, 0.75 / 3),  # D: mean(f) - mean(r).
    # D: ((r-1)^2 = 0.25, 1, 6.25) / 6 + (f^2 = 4, 0.0625, 1) / 6; G: ((f-1)^2) / 6.
    ("least_squares", 7.5 / 6 + 5.0625 / 6, (9 + 0.5625 + 0) / 6),
])
def test_new_losses_match_hand_computed_values(name, d_expected, g_expected):
  loss = gan.get_gan_loss(name)
  assert float(loss.discriminator(REAL_LOGITS, FAKE_LOGITS)) == pytest.approx(d_expected,
                                                                                rel=1e-6)
  assert float(loss.generator(FAKE_LOGITS)) == pytest.approx(g_expected, rel=1e-6)


def test_auxiliary_classifier_loss_is_cross_entropy():
  logits = jnp.array([[0.0, math.log(3.0)], [2.0, 0.0]])
  expected = (-math.log(3 / 4) - math.log(math.exp(2) / (math.exp(2) + 1))) / 2
  got = gan.auxiliary_classifier_loss(logits, jnp.array([1, 0]))
  assert float(got) == pytest.approx(expected, rel=1e-6)


def _mlp_critic(params, images_bhwc):
  """A per-example critic: each logit depends on its own image only."""
  hidden = jnp.tanh(images_bhwc.reshape(images_bhwc.shape[0], -1) @ params["w1"])
  return hidden @ params["w2"]


@pytest.fixture(scope="module")
def critic_setup():
  rng = np.random.default_rng(0)
  params = {"w1": jnp.asarray(rng.normal(size=(4 * 4 * 2, 8)) / 4, jnp.float32),
            "w2": jnp.asarray(rng.normal(size=(8,)), jnp.float32)}
  real, fake = jnp.asarray(rng.uniform(-1, 1, (2, 3, 4, 4, 2)), jnp.float32)
  return params, real, fake


def test_gradient_penalty_matches_a_per_example_loop(critic_setup):
  params, real, fake = critic_setup
  key = jax.random.key(7)
  got = regularizers.gradient_penalty(lambda x: _mlp_critic(params, x), real, fake, key)
  alphas = np.asarray(regularizers.interpolation_weights(key, 3))
  one_logit = lambda x_hwc: _mlp_critic(params, x_hwc[None])[0]
  penalties = []
  for i, alpha in enumerate(alphas):
    gradient = jax.grad(one_logit)(alpha * real[i] + (1 - alpha) * fake[i])
    penalties.append((np.linalg.norm(np.asarray(gradient)) - 1.0) ** 2)
  assert float(got) == pytest.approx(np.mean(penalties), rel=1e-5)
  keys = jax.random.split(key, 3)  # One key per example: weights follow their keys.
  np.testing.assert_array_equal(regularizers.interpolation_weights(keys[::-1], 3),
                                regularizers.interpolation_weights(keys, 3)[::-1])
  # A linear critic <w, x> has gradient w everywhere: the penalty is (|w| - 2)^2.
  w = params["w1"][:, 0]
  linear = regularizers.gradient_penalty(
      lambda x: x.reshape(3, -1) @ w, real, fake, key, target_norm=2.0)
  assert float(linear) == pytest.approx((float(jnp.linalg.norm(w)) - 2.0) ** 2, rel=1e-5)


def test_penalties_train_the_critic_and_survive_zero_gradients(critic_setup):
  params, real, fake = critic_setup
  def penalty(p, scale):
    critic = lambda x: scale * _mlp_critic(p, x)  # scale 0: zero input gradients.
    return regularizers.gradient_penalty(critic, real, fake, jax.random.key(1))

  grads = jax.tree.leaves(jax.grad(penalty)(params, 1.0))
  assert all(np.isfinite(g).all() and np.abs(g).max() > 0 for g in grads)
  assert float(penalty(params, 0.0)) == pytest.approx(1.0)  # (0 - 1)^2.
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(jax.grad(penalty)(params, 0.0)))


def test_r1_penalty_matches_analytic_and_per_example_gradients(critic_setup):
  params, real, _ = critic_setup
  # D(x) = sum(c * x^2) has gradient 2 c x.
  c = jnp.linspace(0.5, 1.5, 4 * 4 * 2).reshape(4, 4, 2)
  quadratic = regularizers.r1_penalty(lambda x: jnp.sum(c * x ** 2, axis=(1, 2, 3)), real)
  expected = 0.5 * np.mean(np.sum(np.square(2 * c * real), axis=(1, 2, 3)))
  assert float(quadratic) == pytest.approx(expected, rel=1e-5)
  got = regularizers.r1_penalty(lambda x: _mlp_critic(params, x), real)
  one_logit = lambda x_hwc: _mlp_critic(params, x_hwc[None])[0]
  squared_norms = [np.sum(np.square(jax.grad(one_logit)(x))) for x in real]
  assert float(got) == pytest.approx(0.5 * np.mean(squared_norms), rel=1e-5)


class _SpectralLayers(nn.Module):
  """A spectrally normalised Dense (on an identity input: its kernel) and Conv."""

  @nn.compact
  def __call__(self, eye, images, *, train):
    normalized = lambda layer, x: spectral_normalized(layer, enabled=True,
                                                      update_stats=train)(x)
    return (normalized(nn.Dense(5, use_bias=False), eye),
            normalized(nn.Conv(6, (3, 3), use_bias=False), images))


def test_spectral_norm_makes_the_largest_singular_value_one():
  module = _SpectralLayers()
  eye, images = jnp.eye(7), _normal(1, (2, 5, 5, 4))
  variables = jax.jit(lambda: module.init(_init_key(0), eye, images, train=False))()
  step = jax.jit(lambda v: {**v, **module.apply(v, eye, images, train=True,
                                                mutable=["batch_stats"])[1]})
  for _ in range(100):  # Power iterations, one per training call, persisted in u.
    variables = step(variables)
  dense_kernel, conv_out = jax.jit(lambda v: module.apply(v, eye, images, train=False))(
      variables)
  assert np.linalg.norm(np.asarray(dense_kernel), 2) == pytest.approx(1.0, abs=1e-4)
  kernel = np.asarray(variables["params"]["Conv_0"]["kernel"])
  sigma = np.linalg.svd(kernel.reshape(-1, 6), compute_uv=False)[0]
  stored_sigma = variables["batch_stats"]["SpectralNorm_1"]["Conv_0/kernel/sigma"]
  assert float(stored_sigma) == pytest.approx(sigma, rel=1e-4)
  expected = nn.Conv(6, (3, 3), use_bias=False).apply(
      {"params": {"kernel": kernel / sigma}}, images)
  np.testing.assert_allclose(conv_out, expected, rtol=1e-4, atol=1e-5)


def test_spectral_norm_state_stays_identical_across_devices():
  """Power iteration on replicated params gives bit-identical u on every device."""
  head = conditioning.ProjectionHead(num_classes=3, spectral_norm=True)
  features = _normal(2, (16, 4))  # Different on each device.
  labels = jnp.arange(16) % 3
  variables = jax.jit(lambda: head.init(_init_key(0), features, labels, train=False))()

  def per_device(v, features_bf, labels_b):
    _, updates = head.apply(v, features_bf, labels_b, train=True, mutable=["batch_stats"])
    return jax.tree.map(lambda x: x[None], updates["batch_stats"])

  mesh = parallel.make_data_mesh(jax.devices()[:8])
  stacked = jax.jit(jax.shard_map(
      per_device, mesh=mesh, in_specs=(P(), P(parallel.DATA_AXIS), P(parallel.DATA_AXIS)),
      out_specs=P(parallel.DATA_AXIS), check_vma=False))(variables, features, labels)
  single = jax.jit(per_device)(variables, features, labels)
  for per_device_values, reference in zip(jax.tree.leaves(stacked), jax.tree.leaves(single)):
    assert (np.asarray(per_device_values) == np.asarray(per_device_values[:1])).all()
    np.testing.assert_allclose(per_device_values[0], reference[0], rtol=1e-6)


def test_ema_update_arithmetic():
  average, params = {"w": jnp.array([1.0, 2.0])}, {"w": jnp.array([3.0, 6.0])}
  updated = ema.ema_update(average, params, 5, decay=0.9)
  np.testing.assert_allclose(updated["w"], [0.9 * 1 + 0.1 * 3, 0.9 * 2 + 0.1 * 6], rtol=1e-6)
  np.testing.assert_allclose(  # Before start_step the average is the weights.
      ema.ema_update(average, params, 4, decay=0.9, start_step=5)["w"], params["w"])
  # Warm-up at n = step - start_step = 2: min(0.9, 3/12) = 0.25.
  warm = ema.ema_update(average, params, 7, decay=0.9, start_step=5, warmup=True)
  np.testing.assert_allclose(warm["w"], [0.25 * 1 + 0.75 * 3, 0.25 * 2 + 0.75 * 6],
                             rtol=1e-6)
  assert float(ema.ema_decay(10_000, decay=0.999, warmup=True)) == pytest.approx(0.999)
  assert (ema.init_ema(params)["w"] == params["w"]).all()


def _init_perturbed_apply(module, inputs, labels):
  """Outputs of `module`, compiled once, with params moved off their initial values (so
  that the per-class parameters all differ), in training mode."""

  @jax.jit
  def run(inputs, labels):
    variables = module.init(_init_key(0), inputs, labels, train=False)
    leaves, treedef = jax.tree.flatten(variables["params"])
    keys = jax.random.split(_init_key(1), len(leaves))
    noisy = [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    variables = {**variables, "params": jax.tree.unflatten(treedef, noisy)}
    return module.apply(variables, inputs, labels, train=True, mutable=["batch_stats"])[0]

  return run(inputs, labels)


@pytest.mark.parametrize("generator", [
    conditioning.ConditionalGenerator(resolution=16, channels=1, num_classes=3,
                                      conditioning="concat", width=2),
    conditioning.ConditionalGenerator(resolution=16, channels=1, num_classes=3,
                                      conditioning="cbn", width=2),
    sngan.SnganGenerator(resolution=32, channels=3, width=1, num_classes=3),
], ids=["dcgan_concat", "dcgan_cbn", "sngan_cbn"])
def test_conditional_generators_depend_on_the_label(generator):
  latents = jnp.tile(_normal(3, (1, 6)), (3, 1))
  images = np.asarray(_init_perturbed_apply(generator, latents, jnp.arange(3)))
  assert np.abs(images).max() <= 1.0
  for a, b in [(0, 1), (0, 2), (1, 2)]:
    assert np.abs(images[a] - images[b]).max() > 1e-4


@pytest.mark.parametrize("mode", conditioning.DISCRIMINATOR_CONDITIONING)
def test_conditional_discriminator_outputs(mode):
  discriminator = conditioning.ConditionalDiscriminator(
      resolution=16, num_classes=3, conditioning=mode, width=2)
  images = jnp.tile(_normal(5, (1, 16, 16, 1)), (3, 1, 1, 1))
  outputs = _init_perturbed_apply(discriminator, images, jnp.arange(3))
  if mode == "acgan":  # The heads' shapes: real/fake logits and class logits.
    logits, class_logits = outputs
    assert logits.shape == (3,) and class_logits.shape == (3, 3)
  else:  # The same image under three labels gets three verdicts.
    assert outputs.shape == (3,) and len(set(np.round(np.asarray(outputs), 5))) == 3


def test_bad_model_settings_are_config_errors():
  generator = conditioning.ConditionalGenerator(resolution=16, channels=1, num_classes=3,
                                                conditioning="projection")
  with pytest.raises(ConfigError, match="model.g_conditioning"):
    generator.init(jax.random.key(0), jnp.ones((1, 4)), jnp.zeros(1, jnp.int32), train=False)
  with pytest.raises(ConfigError, match="data.image_size"):
    sngan.sngan_plan(48)


@pytest.mark.parametrize("resolution", [32, 64])
@pytest.mark.parametrize("num_classes", [0, 10])
def test_sngan_shapes(resolution, num_classes):
  generator = sngan.SnganGenerator(resolution=resolution, channels=3, width=2,
                                   num_classes=num_classes, spectral_norm=True)
  discriminator = sngan.SnganDiscriminator(resolution=resolution, width=2,
                                           num_classes=num_classes)
  latents, labels = jnp.zeros((2, 8)), jnp.array([0, 9])
  output_shape = lambda module, x: jax.eval_shape(lambda x: module.init_with_output(
      jax.random.key(0), x, labels, train=True)[0], x)  # Training mode, no compilation.
  images = output_shape(generator, latents)
  assert images.shape == (2, resolution, resolution, 3)
  assert output_shape(discriminator, images).shape == (2,)


# One jitted function for all tests, so that they share its compilations.
_augment = jax.jit(diffaugment.diff_augment, static_argnames="policy")
_FULL_POLICY = "color,translation,cutout"


@pytest.fixture(scope="module")
def images_to_augment():
  return jnp.asarray(np.random.default_rng(8).uniform(-1, 1, (4, 8, 8, 3)), jnp.float32)


def test_diffaugment_geometry_keeps_shape_and_range(images_to_augment):
  images = np.asarray(images_to_augment)
  key = jax.random.key(9)
  shifted = np.asarray(_augment(images, key, policy="translation"))
  for original, out in zip(images, shifted):  # Some shift by at most 1 pixel, zero-filled.
    padded = np.pad(original, ((1, 1), (1, 1), (0, 0)))
    candidates = [padded[1 + dy:9 + dy, 1 + dx:9 + dx]
                  for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    assert any(np.array_equal(out, c) for c in candidates)
  cut = np.asarray(_augment(images, key, policy="cutout"))
  assert cut.shape == images.shape and cut.dtype == images.dtype
  zeroed = (cut == 0).all(-1)
  assert ((cut == images) | (cut == 0)).all() and 0 < zeroed.sum(axis=(1, 2)).max() <= 16
  full = np.asarray(_augment(images, key, policy=_FULL_POLICY))
  assert full.shape == images.shape and np.isfinite(full).all()
  assert diffaugment.diff_augment(images_to_augment, key, "") is images_to_augment
  with pytest.raises(ConfigError, match="DiffAugment"):
    diffaugment.parse_policy("color,flip")


def test_diffaugment_is_deterministic_per_key_and_per_example(images_to_augment):
  augment = lambda images, key: _augment(images, key, policy=_FULL_POLICY)
  key = jax.random.key(10)
  first, again = augment(images_to_augment, key), augment(images_to_augment, key)
  np.testing.assert_array_equal(first, again)
  assert not np.allclose(first, augment(images_to_augment, jax.random.key(11)))
  # One key per example: each image's augmentation follows its key, not its position
  # (so a device's shard with its keys gets what it would get in the global batch).
  keys = jax.random.split(key, 4)
  np.testing.assert_array_equal(augment(images_to_augment, keys), first)
  np.testing.assert_allclose(augment(images_to_augment[::-1], keys[::-1]), first[::-1])


def test_diffaugment_is_differentiable(images_to_augment):
  weights = _normal(12, images_to_augment.shape)
  objective = lambda x: jnp.sum(weights * diffaugment.diff_augment(
      x, jax.random.key(13), "color,translation,cutout"))
  gradient = np.asarray(jax.jit(jax.grad(objective))(images_to_augment))
  assert np.isfinite(gradient).all() and np.abs(gradient).max() > 0
  assert all(np.abs(g).max() > 0 for g in gradient)  # Every image gets a gradient.
