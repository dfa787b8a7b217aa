"""strided_conv: lax's convolution exactly, with fast second derivatives (gradient
penalties through the discriminator)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import cnnjax.models.dcgan as dcgan_module
from cnnjax.losses.regularizers import gradient_penalty
from cnnjax.models import build_gan
from cnnjax.models.fast_conv import strided_conv
from conftest import load_config

DN = ("NHWC", "HWIO", "NHWC")
CASES = {  # name: (input shape, kernel shape, strides, padding)
    "dcgan": ((2, 8, 8, 3), (4, 4, 3, 5), (2, 2), "SAME"),
    "explicit_odd": ((2, 7, 9, 2), (3, 3, 2, 4), (2, 2), ((1, 0), (2, 1))),
    "stride1_valid": ((1, 6, 6, 2), (3, 3, 2, 3), (1, 1), "VALID"),
    "mixed_strides": ((2, 9, 6, 1), (4, 2, 1, 2), (3, 2), "SAME"),
}


def _arrays(name):
  x_shape, k_shape, strides, padding = CASES[name]
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=k_shape) * 0.3, jnp.float32)
  return x, kernel, strides, padding


def _convs(strides, padding):
  reference = lambda x, k: lax.conv_general_dilated(x, k, strides, padding,
                                                    dimension_numbers=DN)
  fast = lambda x, k: strided_conv(x, k, strides, padding, dimension_numbers=DN)
  return reference, fast


def _penalty(conv):
  """A gradient penalty through one layer: ||d/dx sum(tanh(conv(x, k)))||^2."""
  def penalty(kernel, x):
    grad_x = jax.grad(lambda x: jnp.sum(jnp.tanh(conv(x, kernel))))(x)
    return jnp.sum(grad_x ** 2)
  return penalty


@pytest.mark.parametrize("name", CASES)
def test_outputs_and_gradients_equal_lax_exactly(name):
  x, kernel, strides, padding = _arrays(name)
  reference, fast = _convs(strides, padding)
  loss = lambda conv: jax.jit(jax.value_and_grad(
      lambda k, x: jnp.sum(jnp.sin(conv(x, k))), (0, 1)))
  np.testing.assert_array_equal(jax.jit(fast)(x, kernel), jax.jit(reference)(x, kernel))
  jax.tree.map(np.testing.assert_array_equal, loss(fast)(kernel, x),
               loss(reference)(kernel, x))


@pytest.mark.parametrize("name", CASES)
def test_second_order_matches_lax(name):
  x, kernel, strides, padding = _arrays(name)
  reference, fast = _convs(strides, padding)
  actual, expected = (jax.jit(jax.grad(_penalty(conv), (0, 1)))(kernel, x)
                      for conv in (fast, reference))
  jax.tree.map(lambda a, e: np.testing.assert_allclose(
      a, e, rtol=1e-5, atol=1e-5 * float(np.max(np.abs(e)))), actual, expected)


def test_penalty_gradient_avoids_the_lhs_dilated_kernel_gradient():
  x, kernel, strides, padding = _arrays("dcgan")
  reference, fast = _convs(strides, padding)
  kernel_type = "tensor<4x4x3x5xf32>"

  def slow_convolutions(conv):
    hlo = jax.jit(jax.grad(_penalty(conv))).lower(kernel, x).as_text()
    return [line for line in hlo.splitlines() if "stablehlo.convolution" in line
            and re.search(r"lhs_dilate = \[[0-9, ]*[2-9]", line)
            and line.rstrip().endswith(kernel_type)]

  assert slow_convolutions(reference)  # XLA's slow path, which the test would miss...
  assert not slow_convolutions(fast)   # ... is gone.


def test_vmap_and_fallbacks():
  x, kernel, strides, padding = _arrays("dcgan")
  reference, fast = _convs(strides, padding)
  xs = jnp.stack([x, 2 * x, -x])
  grads = [jax.vmap(jax.grad(lambda k, x, c=c: jnp.sum(jnp.sin(c(x, k)))), (None, 0))(
      kernel, xs) for c in (fast, reference)]
  np.testing.assert_array_equal(*grads)
  # Dilated and grouped convolutions are lax's own.
  dilated = strided_conv(x, kernel, (1, 1), "SAME", rhs_dilation=(2, 2),
                         dimension_numbers=DN)
  np.testing.assert_array_equal(dilated, lax.conv_general_dilated(
      x, kernel, (1, 1), "SAME", rhs_dilation=(2, 2), dimension_numbers=DN))


def test_discriminator_penalty_matches_plain_convolutions():
  config = load_config("dcgan.py", "tiny")
  config.unlock()
  config.model.d_norm = "layer"
  _, discriminator = build_gan(config.model, resolution=28, channels=1, axis_name=None)
  images = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (4, 28, 28, 1)),
                       jnp.float32)
  variables = discriminator.init(jax.random.key(0), images, train=False)
  assert "Conv_0" in variables["params"]  # The parameter paths of nn.Conv.

  def penalty(params):
    critic = lambda x: discriminator.apply({"params": params}, x, train=False)
    return gradient_penalty(critic, images, images[::-1], jax.random.key(2))

  fast_grads = jax.grad(penalty)(variables["params"])
  # The same discriminator with lax's convolution (the name is looked up per call).
  original = dcgan_module.strided_conv
  try:
    dcgan_module.strided_conv = lax.conv_general_dilated
    plain_grads = jax.grad(penalty)(variables["params"])
  finally:
    dcgan_module.strided_conv = original
  jax.tree.map(lambda a, e: np.testing.assert_allclose(
      a, e, rtol=1e-4, atol=1e-5 * float(np.max(np.abs(e)) + 1e-12)),
      fast_grads, plain_grads)
