"""FastConvTranspose equals flax.linen.ConvTranspose: outputs, gradients, params."""

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax import export

from cnnjax.errors import ConfigError
from cnnjax.models import upsample
from cnnjax.models.upsample import FastConvTranspose

# (input shape, ConvTranspose kwargs): DCGAN's layer, odd strides, stride > kernel,
# asymmetric/negative/int pads, 'CIRCULAR', 1-D/3-D, 0 and 2 batch dims, mask.
CASES = {
    "dcgan_same": ((2, 5, 5, 3), dict(features=4, kernel_size=(4, 4), strides=(2, 2))),
    "same_no_bias_tk": ((2, 4, 4, 3), dict(features=2, kernel_size=(4, 4), strides=(2, 2),
                                           use_bias=False, transpose_kernel=True)),
    "valid_s3": ((1, 3, 3, 2), dict(features=3, kernel_size=(3, 3), strides=(3, 3),
                                    padding="VALID")),
    "mixed_k_s_tk": ((2, 4, 5, 2), dict(features=3, kernel_size=(3, 5), strides=(2, 3),
                                        transpose_kernel=True)),
    "stride1_k5": ((2, 3, 3, 4), dict(features=1, kernel_size=(5, 5), strides=(1, 1))),
    "asymmetric": ((2, 4, 4, 2), dict(features=3, kernel_size=(3, 4), strides=(2, 2),
                                      padding=((2, 1), (0, 3)))),
    "negative_pad": ((1, 4, 4, 2), dict(features=2, kernel_size=(4, 4), strides=(2, 2),
                                        padding=((-1, 2), (1, -1)), use_bias=False)),
    "stride_gt_kernel": ((1, 3, 3, 2), dict(features=2, kernel_size=(2, 2),
                                            strides=(3, 3))),
    "int_pad": ((2, 3, 3, 2), dict(features=2, kernel_size=(4, 4), strides=(2, 2),
                                   padding=1, transpose_kernel=True)),
    "circular_tk": ((1, 4, 4, 2), dict(features=3, kernel_size=(4, 4), strides=(2, 2),
                                       padding="CIRCULAR", transpose_kernel=True)),
    "circular": ((1, 3, 3, 2), dict(features=2, kernel_size=(5, 5), strides=(2, 2),
                                    padding="CIRCULAR")),
    "conv1d": ((2, 6, 3), dict(features=2, kernel_size=(5,), strides=(3,),
                               padding="VALID")),
    "conv3d": ((1, 3, 2, 3, 2), dict(features=2, kernel_size=(3, 3, 2),
                                     strides=(2, 1, 2))),
    "no_batch_dim": ((3, 3, 2), dict(features=2, kernel_size=(3, 3), strides=(2, 2))),
    "two_batch_dims": ((2, 1, 3, 3, 2), dict(features=2, kernel_size=(3, 3),
                                             strides=(2, 2), use_bias=False)),
    "dilated_masked": ((1, 4, 4, 2), dict(features=2, kernel_size=(3, 3), strides=(2, 2),
                                          kernel_dilation=(2, 1),
                                          mask=jnp.tril(jnp.ones((3, 3, 2, 2))))),
}


def _normal(seed: int, shape) -> jax.Array:
  # numpy, not jax.random: nothing to compile per shape.
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _random_variables(layer: nn.Module, x: jax.Array):
  """Random params (bias included, unlike its zeros init) shaped as layer.init's."""
  shapes = jax.eval_shape(layer.init, jax.random.key(0), x)
  leaves, treedef = jax.tree.flatten(shapes)
  return treedef.unflatten([_normal(i, leaf.shape) for i, leaf in enumerate(leaves)])


@functools.cache
def _reference(name: str):
  """flax's (variables, x, y, dL/dvariables, dL/dx) for CASES[name]."""
  shape, kwargs = CASES[name]
  x = _normal(10, shape)
  layer = nn.ConvTranspose(**kwargs)
  variables = _random_variables(layer, x)
  return (variables, x) + _value_and_grads(layer, variables, x)


def _value_and_grads(layer: nn.Module, variables, x: jax.Array):
  """(y, dL/dvariables, dL/dx) for L = <y, fixed random cotangent>, one jit."""
  cotangent = _normal(11, jax.eval_shape(layer.apply, variables, x).shape)

  def forward_backward(variables, x):
    y, vjp = jax.vjp(layer.apply, variables, x)
    return (y,) + vjp(cotangent)

  return jax.jit(forward_backward)(variables, x)


def _assert_close(actual, expected):
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5),
               actual, expected)


def _assert_close_to_scale(actual, expected):
  """Close to float32 rounding of each array's largest entry: second-order terms sum
  many large products, in a different order than flax's."""
  jax.tree.map(lambda a, e: np.testing.assert_allclose(
      a, e, rtol=1e-5, atol=1e-5 + 1e-6 * float(np.max(np.abs(e)))), actual, expected)


# Every case with the default method; the others on a representative subset.
OTHER_METHOD_CASES = ("dcgan_same", "mixed_k_s_tk", "asymmetric", "stride_gt_kernel",
                      "circular_tk")


DEFAULT_METHOD = FastConvTranspose.method


@pytest.mark.parametrize("name, method", [(name, DEFAULT_METHOD) for name in CASES] + [
    (name, method) for method in upsample.METHODS if method != DEFAULT_METHOD
    for name in OTHER_METHOD_CASES])
def test_matches_flax_outputs_and_gradients(name, method):
  variables, x, y_ref, dv_ref, dx_ref = _reference(name)
  layer = FastConvTranspose(**CASES[name][1], method=method)
  y, dv, dx = _value_and_grads(layer, variables, x)
  assert y.shape == y_ref.shape and y.dtype == y_ref.dtype
  _assert_close((y, dv, dx), (y_ref, dv_ref, dx_ref))


def test_default_method_is_hybrid():
  assert DEFAULT_METHOD == "hybrid"


def _lhs_dilated(hlo: str) -> list[str]:
  """The lhs-dilated convolutions of a lowered module, without their SSA names."""
  return [line.split("=", 1)[1] for line in hlo.splitlines()
          if "stablehlo.convolution" in line
          and re.search(r"lhs_dilate = \[[0-9, ]*[2-9]", line)]


@pytest.mark.parametrize("name", ["dcgan_same", "dilated_masked"])
def test_hybrid_has_no_lhs_dilated_convolution_in_its_gradients(name):
  variables, x = _reference(name)[:2]
  layer = FastConvTranspose(**CASES[name][1], method="hybrid")
  loss = lambda v, x: jnp.sum(jnp.sin(layer.apply(v, x)))
  forward = jax.jit(loss).lower(variables, x).as_text()
  both = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(variables, x).as_text()
  # On CPU an undilated kernel's forward pass is space-to-depth (none either); a
  # dilated kernel's is flax's lhs-dilated convolution...
  assert len(_lhs_dilated(forward)) == (1 if name == "dilated_masked" else 0)
  assert _lhs_dilated(both) == _lhs_dilated(forward)  # ... and the gradients add none.
  if name == "dcgan_same":  # The kernel gradient: one window-dilated convolution.
    assert sum("stablehlo.convolution" in line and "rhs_dilate = [2, 2]" in line
               for line in both.splitlines()) == 1


def test_hybrid_forward_is_lax_convolution_off_cpu():
  variables, x = _reference("dcgan_same")[:2]
  layer = FastConvTranspose(**CASES["dcgan_same"][1], method="hybrid")
  lowered = {platform: export.export(jax.jit(layer.apply), platforms=[platform])(
      variables, x).mlir_module() for platform in ("cpu", "cuda")}
  assert len(_lhs_dilated(lowered["cuda"])) == 1 and not _lhs_dilated(lowered["cpu"])


def test_hybrid_second_order_matches_flax():
  """custom_jvp: grad-of-grad, jax.hessian and forward mode stay exact."""
  variables, x = _reference("mixed_k_s_tk")[:2]
  kwargs = CASES["mixed_k_s_tk"][1]
  layers = FastConvTranspose(**kwargs, method="hybrid"), nn.ConvTranspose(**kwargs)

  def penalty(layer):
    grads = jax.grad(lambda v, x: jnp.sum(jnp.sin(layer.apply(v, x))), (0, 1))
    return lambda v, x: sum(jnp.sum(g**2) for g in jax.tree.leaves(grads(v, x)))

  actual, expected = (jax.jit(jax.grad(penalty(l), (0, 1)))(variables, x)
                      for l in layers)
  _assert_close_to_scale(actual, expected)
  x_small = x[:1, :2, :2]
  actual, expected = (jax.jit(jax.hessian(
      lambda x, l=l: jnp.sum(jnp.sin(l.apply(variables, x)))))(x_small) for l in layers)
  np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)
  actual, expected = (jax.jit(lambda v, l=l: jax.jvp(
      lambda v: l.apply(v, x), (v,), (v,)))(variables) for l in layers)
  _assert_close(actual, expected)


def test_bfloat16_compute_matches_flax():
  x = _normal(10, (2, 4, 4, 8))
  kwargs = dict(features=4, kernel_size=(4, 4), strides=(2, 2), dtype=jnp.bfloat16)
  variables = _random_variables(nn.ConvTranspose(**kwargs), x)
  y_ref = jax.jit(nn.ConvTranspose(**kwargs).apply)(variables, x)
  for method in ("hybrid", "phase"):
    y = jax.jit(FastConvTranspose(**kwargs, method=method).apply)(variables, x)
    assert y.dtype == y_ref.dtype == jnp.bfloat16
    np.testing.assert_allclose(y.astype(np.float32), y_ref.astype(np.float32),
                               rtol=2e-2, atol=2e-2)
  grads = jax.jit(jax.grad(lambda v: jnp.sum(
      FastConvTranspose(**kwargs).apply(v, x).astype(jnp.float32))))(variables)
  assert (jax.tree.map(lambda a: a.dtype, grads)
          == jax.tree.map(lambda a: a.dtype, variables))


def test_params_have_flax_names_shapes_and_init():
  x = jnp.ones((2, 4, 4, 3))
  for transpose_kernel in (False, True):
    kwargs = dict(features=5, kernel_size=(4, 3), strides=(2, 2),
                  transpose_kernel=transpose_kernel)
    flax_params = jax.jit(nn.ConvTranspose(**kwargs).init)(jax.random.key(7), x)
    fast_params = jax.jit(FastConvTranspose(**kwargs).init)(jax.random.key(7), x)
    assert (jax.tree.map(jnp.shape, fast_params)
            == jax.tree.map(jnp.shape, flax_params))
    _assert_close(fast_params, flax_params)


def test_flax_checkpoint_restores_into_fast_layer(tmp_path):
  x = _normal(10, (2, 4, 4, 3))
  kwargs = dict(features=4, kernel_size=(4, 4), strides=(2, 2), padding="SAME")
  flax_layer, fast_layer = nn.ConvTranspose(**kwargs), FastConvTranspose(**kwargs)
  flax_variables = jax.jit(flax_layer.init)(jax.random.key(0), x)
  y_ref = jax.jit(flax_layer.apply)(flax_variables, x)
  path = tmp_path / "ckpt"
  # orbax 0.12.8's StandardCheckpointer wraps these in ocp.args.StandardSave and
  # ocp.args.StandardRestore itself (its save/restore reject `args=`).
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(path, flax_variables)
    checkpointer.wait_until_finished()
    # The fast layer's own (differently seeded) init is the restore target.
    target = jax.jit(fast_layer.init)(jax.random.key(9), x)
    assert jax.tree.map(jnp.shape, target) == jax.tree.map(jnp.shape, flax_variables)
    restored = checkpointer.restore(path, target)
  _assert_close(restored, flax_variables)
  np.testing.assert_allclose(jax.jit(fast_layer.apply)(restored, x), y_ref,
                             rtol=1e-5, atol=1e-5)


class _TwoLayers(nn.Module):
  """A parent that auto-names its transposed convolutions."""
  upsample: str

  @nn.compact
  def __call__(self, x_bhwc: jax.Array) -> jax.Array:
    layer = upsample.upsample_layer(self.upsample)
    x_bhwc = nn.relu(layer(3, (4, 4), strides=(2, 2), use_bias=False)(x_bhwc))
    return layer(2, (4, 4), strides=(2, 2))(x_bhwc)


def test_parent_model_params_transfer_between_layers():
  x = _normal(10, (2, 3, 3, 2))
  flax_model, fast_model = _TwoLayers("flax"), _TwoLayers("fast")
  variables = _random_variables(flax_model, x)
  assert (jax.tree.map(jnp.shape, _random_variables(fast_model, x))
          == jax.tree.map(jnp.shape, variables))
  np.testing.assert_allclose(jax.jit(fast_model.apply)(variables, x),
                             jax.jit(flax_model.apply)(variables, x),
                             rtol=1e-5, atol=1e-5)


def test_upsample_layer_registry():
  assert upsample.upsample_layer("flax") is nn.ConvTranspose
  assert upsample.upsample_layer("fast") is FastConvTranspose
  with pytest.raises(ConfigError, match="Unknown upsample layer 'nope'"):
    upsample.upsample_layer("nope")


def test_unknown_method_is_a_config_error():
  layer = FastConvTranspose(2, (3, 3), method="nope")
  with pytest.raises(ConfigError, match="Unknown FastConvTranspose method"):
    layer.init(jax.random.key(0), jnp.ones((1, 3, 3, 1)))
