"""Model output shapes for every supported resolution, and unsupported ones refused."""

import jax
import jax.numpy as jnp
import pytest

from cnnjax.errors import ConfigError
from cnnjax.models import dcgan


@pytest.mark.parametrize("resolution,channels", [(28, 1), (32, 3), (64, 3)])
def test_dcgan_shapes(resolution, channels):
  generator = dcgan.Generator(resolution=resolution, channels=channels, width=4)
  discriminator = dcgan.Discriminator(resolution=resolution, width=4)
  latents = jnp.zeros((2, 8))
  g_vars = jax.eval_shape(lambda: generator.init(jax.random.key(0), latents, train=False))
  images = jax.eval_shape(lambda v: generator.apply(v, latents, train=False), g_vars)
  assert images.shape == (2, resolution, resolution, channels)
  d_vars = jax.eval_shape(lambda x: discriminator.init(jax.random.key(0), x, train=False),
                          images)
  logits = jax.eval_shape(lambda v, x: discriminator.apply(v, x, train=False),
                          d_vars, images)
  assert logits.shape == (2,)


def test_generator_output_is_in_tanh_range():
  generator = dcgan.Generator(resolution=16, channels=1, width=2)
  latents = 10 * jax.random.normal(jax.random.key(1), (4, 8))
  variables = generator.init(jax.random.key(0), latents, train=False)
  images = generator.apply(variables, latents, train=False)
  assert images.shape == (4, 16, 16, 1)
  assert float(jnp.max(jnp.abs(images))) <= 1.0


@pytest.mark.parametrize("resolution,plan", [(16, (4, 2)), (28, (7, 2)), (32, (4, 3)),
                                             (64, (4, 4)), (56, (7, 3))])
def test_resolution_plan(resolution, plan):
  assert dcgan.resolution_plan(resolution) == plan


@pytest.mark.parametrize("resolution", [8, 14, 30, 48, 512])
def test_unsupported_resolution_is_a_config_error(resolution):
  with pytest.raises(ConfigError, match="data.image_size"):
    dcgan.resolution_plan(resolution)
