"""Transposed convolution without XLA's slow lhs-dilated weight gradient on CPU.

`flax.linen.ConvTranspose` calls `lax.conv_transpose`, i.e. a convolution with
`lhs_dilation=strides`. On CPU, XLA computes the kernel gradient of that
convolution pathologically slowly (jax-ml/jax#23783, #31662). `FastConvTranspose`
computes exactly the same function with the same parameters, but with gradients
that avoid lhs-dilated convolutions:

* `method='hybrid'`: the forward pass is flax's own lhs-dilated convolution, on CPU
  computed as the adjoint of a space-to-depth strided convolution (a stride-1
  convolution and a depth-to-space, faster there; `cnnjax.models.fast_conv`);
  a `jax.custom_jvp` writes its tangent in the kernel so that reverse mode
  computes the kernel gradient as that of the adjoint strided convolution, one
  convolution with window dilation (see `conv_transpose_kernel_tangent`; with
  mixed input and kernel dtypes, the 'phase' decomposition below), while the input
  gradient is JAX's usual transpose of the convolution in its input, an ordinary
  convolution of the cotangent with the flipped kernel, strided by `strides`. A
  `custom_jvp` rather than a `custom_vjp` keeps forward mode, vmap and every order
  of differentiation (grad-of-grad, `jax.hessian`, `jax.jvp`) working and exact:
  the rule calls the function itself, so each order reuses it. Every attribute is
  supported.
* `method='phase'`: sub-pixel decomposition. Output position
  `o = s * q + r` only sees the kernel taps `j = (lo - r) mod s + s * m`, so each
  of the `prod(strides)` output phases is an ordinary convolution of the
  undilated input with a strided slice of the kernel, computed as one matmul
  over patches gathered by slicing (XLA's CPU matmuls beat its convolutions);
  the phases are then interleaved (depth-to-space). No multiply touches an
  inserted zero.
* `method='phase_conv'`: the same phases, each a `lax.conv_general_dilated`.
* `method='zeros'`: inserts the `s - 1` zeros explicitly (`lax.pad` with interior
  padding), then runs one stride-1 convolution over the dilated input.

The default is 'hybrid': see experiments/benchmarks/upsample_bench.py.

All are checkpoint-compatible with `nn.ConvTranspose`: same parameter names,
shapes and semantics (padding, `transpose_kernel`, 'CIRCULAR', mask, dtypes).
"""

import functools
import itertools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import dtypes as flax_dtypes
from flax.linen import initializers
from flax.linen.linear import (PaddingLike, PrecisionLike, PromoteDtypeFn,
                               canonicalize_padding, default_kernel_init)
from flax.typing import Dtype, Initializer
from jax import lax
from jax.custom_derivatives import SymbolicZero

from cnnjax.errors import ConfigError
from cnnjax.models.fast_conv import (channels_last_numbers,
                                     transposed_conv_by_space_to_depth)

METHODS = ("hybrid", "phase", "phase_conv", "zeros")


def transpose_padding(kernel: int, stride: int, padding: str) -> tuple[int, int]:
  """Padding of the dilated input for 'SAME'/'VALID', as `lax.conv_transpose`."""
  if padding == "SAME":
    total = kernel + stride - 2
    lo = kernel - 1 if stride > kernel - 1 else -(-total // 2)
  elif padding == "VALID":
    total = kernel + stride - 2 + max(kernel - stride, 0)
    lo = kernel - 1
  else:
    raise ValueError(f"Invalid padding mode: {padding!r}")
  return lo, total - lo


def conv_transpose_zeros(x_bsc: jax.Array, kernel_sio: jax.Array,
                         strides: Sequence[int], pads: Sequence[tuple[int, int]],
                         kernel_dilation: Sequence[int], **conv_kwargs) -> jax.Array:
  """`lax.conv_transpose` by explicit zero insertion, then a stride-1 conv.

  Args:
    x_bsc: input (batch, *spatial, in).
    kernel_sio: kernel (*spatial, in, out), already flipped/swapped if needed.
    strides: fractional strides, one per spatial dim.
    pads: (lo, hi) padding of the dilated input per spatial dim (may be < 0).
    kernel_dilation: kernel dilation per spatial dim.
    **conv_kwargs: `precision` and `preferred_element_type`.

  Returns:
    Output (batch, *spatial_out, out).
  """
  zero = jnp.zeros((), x_bsc.dtype)
  config = [(0, 0, 0)] + [(lo, hi, s - 1) for (lo, hi), s in zip(pads, strides)]
  x_dilated = lax.pad(x_bsc, zero, config + [(0, 0, 0)])
  ones = (1,) * len(strides)
  return lax.conv_general_dilated(
      x_dilated, kernel_sio, ones, "VALID", rhs_dilation=tuple(kernel_dilation),
      dimension_numbers=channels_last_numbers(x_bsc.ndim), **conv_kwargs)


def conv_transpose_phase(x_bsc: jax.Array, kernel_sio: jax.Array,
                         strides: Sequence[int], pads: Sequence[tuple[int, int]],
                         matmul: bool = True, **conv_kwargs) -> jax.Array:
  """`lax.conv_transpose` (kernel dilation 1) as prod(strides) phase convolutions.

  Args and result as `conv_transpose_zeros`, plus `matmul`: computes each phase as
  patches @ kernel rather than with a convolution.
  """
  batch, *sizes, _ = x_bsc.shape
  ksizes, features = kernel_sio.shape[:-2], kernel_sio.shape[-1]
  out_sizes = [(n - 1) * s + 1 + lo + hi - k + 1
               for n, s, (lo, hi), k in zip(sizes, strides, pads, ksizes)]
  out_dtype = conv_kwargs.get("preferred_element_type") or jnp.result_type(
      x_bsc.dtype, kernel_sio.dtype)
  if min(out_sizes) <= 0:  # Very negative padding: an empty output, as in lax.
    return jnp.zeros((batch, *(max(o, 0) for o in out_sizes), features), out_dtype)
  # Every phase computes `per_phase` outputs; the surplus is cropped at the end.
  per_phase = [-(-o // s) for o, s in zip(out_sizes, strides)]

  def phase_plan(r: int, dim: int) -> tuple[slice, tuple[int, int]]:
    """Kernel taps and input (lo, hi) padding of output phase `r` along `dim`."""
    s, n, k, (lo, _) = strides[dim], sizes[dim], ksizes[dim], pads[dim]
    first = (lo - r) % s
    taps = len(range(first, k, s))
    # Output s * q + r reads input q + m + offset for tap first + s * m.
    offset = (r + first - lo) // s
    return slice(first, k, s), (-offset, per_phase[dim] + taps - 1 - n + offset)

  dn = channels_last_numbers(x_bsc.ndim)
  ones = (1,) * len(strides)
  zero = jnp.zeros((), x_bsc.dtype)
  phases = []
  for rs in itertools.product(*(range(s) for s in strides)):
    plans = [phase_plan(r, dim) for dim, r in enumerate(rs)]
    sub_kernel = kernel_sio[tuple(taps for taps, _ in plans)]
    if 0 in sub_kernel.shape[:-2]:  # stride > kernel: this phase sees no taps.
      phases.append(jnp.zeros((batch, *per_phase, features), out_dtype))
      continue
    config = [(0, 0, 0)] + [pad + (0,) for _, pad in plans] + [(0, 0, 0)]
    x_padded = lax.pad(x_bsc, zero, config)
    if matmul:
      phases.append(_patches_matmul(x_padded, sub_kernel, per_phase, **conv_kwargs))
    else:
      phases.append(lax.conv_general_dilated(
          x_padded, sub_kernel, ones, "VALID", dimension_numbers=dn, **conv_kwargs))
  # Depth-to-space: (s1, ..., sn, B, q1, ..., qn, C) -> (B, q1 s1, ..., qn sn, C).
  nd = len(strides)
  y = jnp.stack(phases).reshape(*strides, batch, *per_phase, features)
  order = [nd] + [i for d in range(nd) for i in (nd + 1 + d, d)] + [2 * nd + 1]
  y = y.transpose(order).reshape(
      batch, *(q * s for q, s in zip(per_phase, strides)), features)
  return y[(slice(None),) + tuple(slice(0, o) for o in out_sizes)]


def _patches_matmul(x_bsc: jax.Array, kernel_sio: jax.Array,
                    out_sizes: Sequence[int], **dot_kwargs) -> jax.Array:
  """A 'VALID' stride-1 correlation as im2col (by slicing) and one matmul.

  Args:
    x_bsc: padded input (batch, *spatial, in).
    kernel_sio: kernel (*taps, in, out).
    out_sizes: output spatial sizes (spatial - taps + 1).
    **dot_kwargs: `precision` and `preferred_element_type`.

  Returns:
    (batch, *out_sizes, out).
  """
  taps = kernel_sio.shape[:-2]
  patches = [x_bsc[(slice(None),) + tuple(slice(m, m + o) for m, o in zip(ms, out_sizes))]
             for ms in itertools.product(*(range(t) for t in taps))]
  # (batch, *out, prod(taps) * in), taps-major like kernel_sio.reshape(-1, out).
  patches = patches[0] if len(patches) == 1 else jnp.concatenate(patches, -1)
  kernel = kernel_sio.reshape(-1, kernel_sio.shape[-1])
  return lax.dot_general(patches, kernel, (((patches.ndim - 1,), (0,)), ((), ())),
                         **dot_kwargs)


def conv_transpose_kernel_tangent(x_bsc: jax.Array, kernel_dot: jax.Array,
                                  strides: Sequence[int],
                                  pads: Sequence[tuple[int, int]],
                                  kernel_dilation: Sequence[int],
                                  precision: PrecisionLike = None) -> jax.Array:
  """`lax.conv_transpose(x, kernel_dot)`, written so that its transpose in the kernel
  is fast: the kernel gradient of the adjoint *strided* convolution.

  The transposed convolution y = T(x, k) is the adjoint, in its input, of a strided
  convolution S(u, k) (`jax.linear_transpose` derives S). The kernel gradient of T at
  cotangent dy is therefore that of S at input dy and cotangent x: one convolution
  with window dilation `strides`, which XLA runs fast, not the slow lhs-dilated one.
  This function is the transpose of that kernel gradient G(u) (linear in u), so
  reverse mode, transposing it back, runs exactly G; every step is a JAX transpose,
  so forward mode, vmap and higher orders keep working.

  Args:
    x_bsc: input (batch, *spatial, in).
    kernel_dot: kernel (or kernel tangent) (*taps, in, out), as `lax.conv_transpose`.
    strides, pads, kernel_dilation, precision: as `conv_transpose_hybrid`.

  Returns:
    (batch, *spatial_out, out), equal to the transposed convolution.
  """
  def transposed_conv(inputs, kernel):
    return lax.conv_general_dilated(
        inputs, kernel, (1,) * len(strides), tuple(pads), lhs_dilation=tuple(strides),
        rhs_dilation=tuple(kernel_dilation),
        dimension_numbers=channels_last_numbers(inputs.ndim), precision=precision)

  y_like = jax.eval_shape(transposed_conv, x_bsc, kernel_dot)

  def strided_conv(u_bsc, kernel):  # S(u, k): the adjoint of T(., k).
    return jax.linear_transpose(lambda inputs: transposed_conv(inputs, kernel),
                                x_bsc)(u_bsc)[0]

  def kernel_gradient(u_bsc):  # G(u): the cotangent of k in <x, S(u, k)>.
    return jax.linear_transpose(lambda kernel: strided_conv(u_bsc, kernel),
                                kernel_dot)(x_bsc)[0]

  return jax.linear_transpose(kernel_gradient, y_like)(kernel_dot)[0]


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5, 6))
def _conv_transpose_lax(x_bsc: jax.Array, kernel_sio: jax.Array,
                        strides: tuple[int, ...],
                        pads: tuple[tuple[int, int], ...],
                        kernel_dilation: tuple[int, ...], precision: PrecisionLike,
                        preferred_element_type: Dtype | None) -> jax.Array:
  """`lax.conv_transpose` itself, differentiated without lhs-dilated kernel grads.

  Args and result as `conv_transpose_zeros` (all but the arrays hashable).
  """
  return lax.conv_general_dilated(
      x_bsc, kernel_sio, (1,) * len(strides), pads, lhs_dilation=strides,
      rhs_dilation=kernel_dilation, dimension_numbers=channels_last_numbers(x_bsc.ndim),
      precision=precision, preferred_element_type=preferred_element_type)


def _conv_transpose_lax_jvp(
    strides: tuple[int, ...], pads: tuple[tuple[int, int], ...],
    kernel_dilation: tuple[int, ...], precision: PrecisionLike,
    preferred_element_type: Dtype | None, primals: tuple[jax.Array, jax.Array],
    tangents: tuple[jax.Array | SymbolicZero, jax.Array | SymbolicZero]
) -> tuple[jax.Array, jax.Array]:
  """Bilinear: y' = f(x', k) + f(x, k'), the second term by phases (or zeros).

  Symbolic-zero tangents (inputs not differentiated) are skipped, not computed.
  """
  (x_bsc, kernel_sio), (x_dot, kernel_dot) = primals, tangents
  config = (strides, pads, kernel_dilation, precision, preferred_element_type)
  conv_kwargs = dict(precision=precision,
                     preferred_element_type=preferred_element_type)
  y = _conv_transpose_lax(x_bsc, kernel_sio, *config)
  terms = []
  if not isinstance(x_dot, SymbolicZero):
    # Reverse mode transposes this, linear in x', with JAX's own rule: a conv of
    # the cotangent with the flipped kernel, strided by `strides`, undilated.
    terms.append(_conv_transpose_lax(x_dot, kernel_sio, *config))
  if isinstance(kernel_dot, SymbolicZero):
    pass
  elif preferred_element_type is None and x_bsc.dtype == kernel_dot.dtype:
    terms.append(conv_transpose_kernel_tangent(x_bsc, kernel_dot, strides, pads,
                                               kernel_dilation, precision))
  elif all(d == 1 for d in kernel_dilation):  # Mixed dtypes: phases.
    terms.append(conv_transpose_phase(x_bsc, kernel_dot, strides, pads, **conv_kwargs))
  else:
    terms.append(conv_transpose_zeros(x_bsc, kernel_dot, strides, pads,
                                      kernel_dilation, **conv_kwargs))
  return y, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(y)


_conv_transpose_lax.defjvp(_conv_transpose_lax_jvp, symbolic_zeros=True)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5, 6))
def conv_transpose_hybrid(x_bsc: jax.Array, kernel_sio: jax.Array,
                          strides: tuple[int, ...],
                          pads: tuple[tuple[int, int], ...],
                          kernel_dilation: tuple[int, ...], precision: PrecisionLike,
                          preferred_element_type: Dtype | None) -> jax.Array:
  """`lax.conv_transpose`, computed on CPU without lhs dilation, differentiated
  without lhs-dilated kernel gradients.

  On CPU (undilated kernels, one dtype) the value is
  `transposed_conv_by_space_to_depth`'s, a stride-1 convolution and a depth-to-space
  that XLA:CPU runs faster than the lhs-dilated convolution; elsewhere lax's. The
  derivatives are `_conv_transpose_lax`'s on every platform: the input gradient is a
  strided convolution, the kernel gradient a window-dilated one.

  Args and result as `conv_transpose_zeros` (all but the arrays hashable).
  """
  config = (strides, pads, kernel_dilation, precision, preferred_element_type)
  lax_value = lambda x, kernel: _conv_transpose_lax(x, kernel, *config)
  if (any(d != 1 for d in kernel_dilation) or preferred_element_type is not None
      or x_bsc.dtype != kernel_sio.dtype):
    return lax_value(x_bsc, kernel_sio)
  return lax.platform_dependent(
      x_bsc, kernel_sio, default=lax_value,
      cpu=lambda x, kernel: transposed_conv_by_space_to_depth(x, kernel, strides, pads,
                                                              precision))


def _conv_transpose_hybrid_jvp(strides, pads, kernel_dilation, precision,
                               preferred_element_type, primals, tangents):
  config = (strides, pads, kernel_dilation, precision, preferred_element_type)
  _, y_dot = _conv_transpose_lax_jvp(*config, primals, tangents)
  return conv_transpose_hybrid(*primals, *config), y_dot


conv_transpose_hybrid.defjvp(_conv_transpose_hybrid_jvp, symbolic_zeros=True)


class FastConvTranspose(nn.Module):
  """Drop-in `nn.ConvTranspose` whose gradients avoid lhs-dilated convolutions.

  Same attributes, parameters (`kernel` (*kernel_size, in, features) or
  (*kernel_size, features, in) with `transpose_kernel`; `bias` (features,)) and
  outputs as `flax.linen.ConvTranspose`; see its docstring. Its `__name__` is
  'ConvTranspose' too, so parents auto-name it like flax's layer. Extra attribute:

  Attributes:
    method: 'hybrid' (flax's forward, fast custom derivatives; default), 'phase'
      (sub-pixel decomposition as matmuls), 'phase_conv' (the same with
      convolutions) or 'zeros' (explicit zero insertion); see the module
      docstring. With kernel dilation > 1, 'phase' and 'phase_conv' use 'zeros'.
  """
  features: int
  kernel_size: int | Sequence[int]
  strides: Sequence[int] | None = None
  padding: PaddingLike = "SAME"
  kernel_dilation: Sequence[int] | None = None
  use_bias: bool = True
  mask: jax.Array | None = None
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  precision: PrecisionLike = None
  kernel_init: Initializer = default_kernel_init
  bias_init: Initializer = initializers.zeros_init()
  transpose_kernel: bool = False
  promote_dtype: PromoteDtypeFn = flax_dtypes.promote_dtype
  preferred_element_type: Dtype | None = None
  method: str = "hybrid"

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    """Applies the transposed convolution.

    Args:
      inputs: (*batch_dims, *spatial, in), channels last; zero or several batch
        dims are flattened as in `nn.ConvTranspose`.

    Returns:
      (*batch_dims, *spatial_out, features).
    """
    if self.method not in METHODS:
      raise ConfigError(f"Unknown FastConvTranspose method {self.method!r}: use one "
                        f"of {', '.join(METHODS)}.")
    kernel_size = ((self.kernel_size,) if isinstance(self.kernel_size, int)
                   else tuple(self.kernel_size))
    nd = len(kernel_size)

    def broadcast(x: int | Sequence[int] | None) -> tuple[int, ...]:
      x = 1 if x is None else x
      return (x,) * nd if isinstance(x, int) else tuple(x)

    num_batch_dims = inputs.ndim - (nd + 1)
    if num_batch_dims != 1:
      batch_shape = inputs.shape[:num_batch_dims]
      inputs = jnp.reshape(inputs, (-1,) + inputs.shape[num_batch_dims:])
    strides = broadcast(self.strides)
    kernel_dilation = broadcast(self.kernel_dilation)

    in_features = jnp.shape(inputs)[-1]
    if self.transpose_kernel:
      kernel_shape = kernel_size + (self.features, in_features)
    else:
      kernel_shape = kernel_size + (in_features, self.features)
    if self.mask is not None and self.mask.shape != kernel_shape:
      raise ValueError("Mask needs to have the same shape as weights. "
                       f"Shapes are: {self.mask.shape}, {kernel_shape}")
    kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
    if self.mask is not None:
      kernel *= self.mask

    padding = canonicalize_padding(self.padding, nd)
    if padding == "CIRCULAR":
      padding = "VALID"
    dilated_ksize = [(k - 1) * d + 1 for k, d in zip(kernel_size, kernel_dilation)]
    if isinstance(padding, str):
      pads = [transpose_padding(k, s, padding)
              for k, s in zip(dilated_ksize, strides)]
    else:
      pads = [tuple(int(i) for i in p) for p in padding]

    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    if self.transpose_kernel:
      kernel = jnp.flip(kernel, tuple(range(nd))).swapaxes(-1, -2)

    conv_kwargs = dict(precision=self.precision,
                       preferred_element_type=self.preferred_element_type)
    if self.method == "hybrid":
      precision = (tuple(self.precision) if isinstance(self.precision, list)
                   else self.precision)  # nondiff_argnums are hashed.
      y = conv_transpose_hybrid(inputs, kernel, strides, tuple(pads), kernel_dilation,
                                precision, self.preferred_element_type)
    elif self.method != "zeros" and all(d == 1 for d in kernel_dilation):
      y = conv_transpose_phase(inputs, kernel, strides, pads,
                               matmul=self.method == "phase", **conv_kwargs)
    else:
      y = conv_transpose_zeros(inputs, kernel, strides, pads, kernel_dilation,
                               **conv_kwargs)

    if self.padding == "CIRCULAR":
      y = _wrap_circular(y, [n * s for n, s in zip(inputs.shape[1:-1], strides)],
                         self.transpose_kernel)
    if self.use_bias:
      y += jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
    if num_batch_dims != 1:
      y = jnp.reshape(y, batch_shape + y.shape[1:])
    return y


# Parents auto-name submodules `<class __name__>_<i>`: sharing nn.ConvTranspose's
# name makes a model's params tree the same whichever of the two it uses.
FastConvTranspose.__name__ = nn.ConvTranspose.__name__


def _wrap_circular(y_bsc: jax.Array, periods: Sequence[int],
                   transpose_kernel: bool) -> jax.Array:
  """Folds a 'VALID' result onto `periods` (input size * stride), as flax does."""
  size_diffs = [-(n - p) % (2 * p) for n, p in zip(y_bsc.shape[1:-1], periods)]
  if transpose_kernel:
    pads = [(d // 2, (d + 1) // 2) for d in size_diffs]
  else:  # flax's convention for aligning even-sized kernels.
    pads = [((d + 1) // 2, d // 2) for d in size_diffs]
  y_bsc = jnp.pad(y_bsc, [(0, 0)] + pads + [(0, 0)])
  for i, period in enumerate(periods, start=1):
    y_bsc = y_bsc.reshape(y_bsc.shape[:i] + (-1, period) + y_bsc.shape[i + 1:])
    y_bsc = y_bsc.sum(axis=i)
  return y_bsc


UPSAMPLE_LAYERS = {"flax": nn.ConvTranspose, "fast": FastConvTranspose}


def upsample_layer(name: str) -> type[nn.Module]:
  """The transposed-convolution class called `name` (config `model.upsample`).

  Raises:
    ConfigError: if `name` is not a key of `UPSAMPLE_LAYERS`.
  """
  if name not in UPSAMPLE_LAYERS:
    raise ConfigError(f"Unknown upsample layer {name!r}: use one of "
                      f"{', '.join(UPSAMPLE_LAYERS)}.")
  return UPSAMPLE_LAYERS[name]
