"""strided_conv: lax's convolution exactly, with fast second derivatives (gradient
penalties through the discriminator)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export, lax

import cnnjax.models.dcgan as dcgan_module
from cnnjax.losses.regularizers import gradient_penalty
from cnnjax.models import build_gan
from cnnjax.models.fast_conv import channels_last_numbers, space_to_depth_conv, strided_conv
from cnnjax.train import parallel
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
def test_outputs_and_kernel_gradients_equal_lax_exactly(name):
  x, kernel, strides, padding = _arrays(name)
  reference, fast = _convs(strides, padding)
  loss = lambda conv: jax.jit(jax.value_and_grad(
      lambda k, x: jnp.sum(jnp.sin(conv(x, k))), (0, 1)))
  np.testing.assert_array_equal(jax.jit(fast)(x, kernel), jax.jit(reference)(x, kernel))
  (value, (dkernel, dx)), (value_ref, (dkernel_ref, dx_ref)) = (
      loss(fast)(kernel, x), loss(reference)(kernel, x))
  np.testing.assert_array_equal(value, value_ref)
  np.testing.assert_array_equal(dkernel, dkernel_ref)
  # On CPU the input gradient is space_to_depth_conv's transpose: other sums, same value.
  np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-6)


SPACE_TO_DEPTH_CASES = {  # name: (input shape, kernel taps, strides, padding)
    "dcgan": ((2, 16, 16, 5), (4, 4), (2, 2), ((1, 1), (1, 1))),
    "odd_sizes_mixed_strides": ((2, 15, 17, 3), (3, 5), (2, 3), ((1, 2), (0, 2))),
    "stride_gt_kernel": ((1, 11, 10, 2), (2, 3), (3, 4), ((0, 1), (2, 0))),
    "negative_pads": ((2, 12, 12, 4), (4, 4), (2, 2), ((-1, 2), (2, -1))),
    "conv1d": ((2, 9, 4), (4,), (2,), ((2, 1),)),
    "conv3d": ((2, 8, 8, 8, 2), (2, 4, 3), (2, 2, 1), ((0, 0), (1, 1), (1, 1))),
}


@pytest.mark.parametrize("name", SPACE_TO_DEPTH_CASES)
def test_space_to_depth_conv_equals_lax_and_transposes_without_lhs_dilation(name):
  x_shape, taps, strides, padding = SPACE_TO_DEPTH_CASES[name]
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=taps + (x_shape[-1], 3)), jnp.float32)
  spec = channels_last_numbers(x.ndim)
  expected = lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=spec)
  actual = space_to_depth_conv(x, kernel, strides, padding)
  np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)
  cotangent = jnp.asarray(rng.normal(size=expected.shape), jnp.float32)
  transpose = lambda conv: jax.linear_transpose(conv, x)(cotangent)[0]
  np.testing.assert_allclose(
      transpose(lambda x: space_to_depth_conv(x, kernel, strides, padding)),
      transpose(lambda x: lax.conv_general_dilated(x, kernel, strides, padding,
                                                   dimension_numbers=spec)),
      rtol=1e-5, atol=1e-5)
  hlo = jax.jit(lambda c: jax.linear_transpose(
      lambda x: space_to_depth_conv(x, kernel, strides, padding), x)(c)[0]).lower(
          cotangent).as_text()
  convolutions = [line for line in hlo.splitlines() if "stablehlo.convolution" in line]
  assert convolutions and not any(re.search(r"lhs_dilate = \[[0-9, ]*[2-9]", line)
                                      for line in convolutions)


def test_input_gradient_is_space_to_depth_on_cpu_and_lax_elsewhere():
  x, kernel, strides, padding = _arrays("dcgan")
  _, fast = _convs(strides, padding)
  input_gradient = jax.jit(jax.grad(lambda x: jnp.sum(jnp.sin(fast(x, kernel)))))
  lowered = {platform: export.export(input_gradient, platforms=[platform])(x).mlir_module()
             for platform in ("cpu", "cuda")}
  lhs_dilated = lambda hlo: [line for line in hlo.splitlines()
                             if "stablehlo.convolution" in line
                             and re.search(r"lhs_dilate = \[[0-9, ]*[2-9]", line)]
  assert not lhs_dilated(lowered["cpu"])
  assert len(lhs_dilated(lowered["cuda"])) == 1  # lax's transpose rule.


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


def test_cpu_compiler_options_leave_convolutions_to_xla():
  mesh = parallel.make_data_mesh(jax.devices()[:1])
  assert parallel.compiler_options(mesh) == parallel.CPU_COMPILER_OPTIONS
  # Large enough for XLA:CPU's cost model to pick a library (shapes only: no run).
  x = jax.ShapeDtypeStruct((32, 16, 16, 64), jnp.float32)
  kernel = jax.ShapeDtypeStruct((4, 4, 64, 128), jnp.float32)
  reference, _ = _convs((2, 2), "SAME")
  compiled = lambda options: jax.jit(reference, compiler_options=options).lower(
      x, kernel).compile().as_text()
  assert "__ynn_fusion" in compiled(None)  # XLA:CPU's default: YNNPACK convolutions...
  assert "__ynn_fusion" not in compiled(parallel.compiler_options(mesh))  # ... not ours.
