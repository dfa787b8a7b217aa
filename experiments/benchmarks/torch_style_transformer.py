"""A PyTorch copy of cnnjax's fast-style network: the style benchmark's reference.

`TorchStyleTransformer` is `cnnjax.models.style_transformer.StyleTransformer` layer for
layer (reflection pads, bias-free 3x3 and 9x9 convolutions, affine InstanceNorm with eps
1e-5, residual blocks, nearest-neighbour resize-convolutions back to the sizes of the way
down, a biased output convolution and tanh), so that `load_flax_params` can copy a
trained flax network into it and both compute the same function: the benchmark times
the same work on both sides, and `tests/test_benchmark_reference.py` checks the outputs
agree to float tolerance.

The one translation is in the upsampling: `jax.image.resize(..., "nearest")` samples at
half-pixel centres, which is PyTorch's `"nearest-exact"` (its `"nearest"` rounds down
and differs at sizes that are not exact doublings).
"""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1,
          bias: bool = False) -> nn.Sequential:
  return nn.Sequential(nn.ReflectionPad2d(kernel // 2),
                       nn.Conv2d(in_channels, out_channels, kernel, stride, bias=bias))


def _norm(channels: int) -> nn.InstanceNorm2d:
  return nn.InstanceNorm2d(channels, eps=1e-5, affine=True)


class TorchStyleTransformer(nn.Module):
  """Images (B, 3, H, W) in [-1, 1] -> stylised (B, 3, H, W) in (-1, 1).

  Args:
    widths: channels of the stem and of each downsampling level.
    num_residual_blocks: residual blocks at the narrowest level.
    outer_kernel: kernel size of the stem and output convolutions.
  """

  def __init__(self, widths: Sequence[int] = (32, 64, 128), num_residual_blocks: int = 5,
               outer_kernel: int = 9):
    super().__init__()
    widths = tuple(widths)
    self.stem = _conv(3, widths[0], outer_kernel)
    self.stem_norm = _norm(widths[0])
    self.down = nn.ModuleList(_conv(widths[i - 1], widths[i], 3, stride=2)
                              for i in range(1, len(widths)))
    self.down_norm = nn.ModuleList(_norm(width) for width in widths[1:])
    width = widths[-1]
    self.blocks_a = nn.ModuleList(_conv(width, width, 3) for _ in range(num_residual_blocks))
    self.blocks_a_norm = nn.ModuleList(_norm(width) for _ in range(num_residual_blocks))
    self.blocks_b = nn.ModuleList(_conv(width, width, 3) for _ in range(num_residual_blocks))
    self.blocks_b_norm = nn.ModuleList(_norm(width) for _ in range(num_residual_blocks))
    # up[i] maps widths[i + 1] -> widths[i] (flax's `up{i + 1}`), applied last to first.
    self.up = nn.ModuleList(_conv(widths[i + 1], widths[i], 3)
                            for i in range(len(widths) - 1))
    self.up_norm = nn.ModuleList(_norm(width) for width in widths[:-1])
    self.out = _conv(widths[0], 3, outer_kernel, bias=True)

  def forward(self, x_bchw: torch.Tensor) -> torch.Tensor:
    h = F.relu(self.stem_norm(self.stem(x_bchw)))
    sizes = []
    for conv, norm in zip(self.down, self.down_norm):
      sizes.append(h.shape[2:])
      h = F.relu(norm(conv(h)))
    for conv_a, norm_a, conv_b, norm_b in zip(self.blocks_a, self.blocks_a_norm,
                                              self.blocks_b, self.blocks_b_norm):
      h = h + norm_b(conv_b(F.relu(norm_a(conv_a(h)))))
    for index in reversed(range(len(self.up))):
      h = F.interpolate(h, size=tuple(sizes[index]), mode="nearest-exact")
      h = F.relu(self.up_norm[index](self.up[index](h)))
    return torch.tanh(self.out(h))


def count_parameters(module: nn.Module) -> int:
  return sum(parameter.numel() for parameter in module.parameters())


def _kernel(flax_kernel_hwio: Any) -> torch.Tensor:
  return torch.from_numpy(np.ascontiguousarray(
      np.transpose(np.asarray(flax_kernel_hwio, np.float32), (3, 2, 0, 1))))


def load_flax_params(module: TorchStyleTransformer, params: Mapping[str, Any]) -> None:
  """Copies a flax `StyleTransformer`'s params (`variables["params"]`) into `module`.

  Raises:
    KeyError / RuntimeError: the two networks' layouts differ.
  """
  pairs: list[tuple[nn.Module, nn.Module, str]] = [(module.stem[1], module.stem_norm, "stem")]
  pairs += [(conv[1], norm, f"down{i + 1}")
            for i, (conv, norm) in enumerate(zip(module.down, module.down_norm))]
  for block in range(len(module.blocks_a)):
    pairs += [(module.blocks_a[block][1], module.blocks_a_norm[block], f"block{block}_a"),
              (module.blocks_b[block][1], module.blocks_b_norm[block], f"block{block}_b")]
  pairs += [(conv[1], norm, f"up{i + 1}")
            for i, (conv, norm) in enumerate(zip(module.up, module.up_norm))]
  with torch.no_grad():
    for conv, norm, name in pairs:
      conv.weight.copy_(_kernel(params[name]["kernel"]))
      norm.weight.copy_(torch.from_numpy(np.array(params[f"{name}_norm"]["scale"], np.float32)))
      norm.bias.copy_(torch.from_numpy(np.array(params[f"{name}_norm"]["bias"], np.float32)))
    module.out[1].weight.copy_(_kernel(params["out"]["kernel"]))
    module.out[1].bias.copy_(torch.from_numpy(np.array(params["out"]["bias"], np.float32)))
  expected = sum(int(np.prod(np.shape(leaf))) for layer in params.values()
                 for leaf in layer.values())
  if expected != count_parameters(module):
    raise RuntimeError(f"The flax network has {expected} parameters, the torch one "
                       f"{count_parameters(module)}: their widths or blocks differ.")
