"""A PyTorch DCGAN identical to cnnjax's, and its training step: the benchmark's reference.

The networks match `cnnjax.models.dcgan` layer for layer, with the channel schedule of
`cnnjax.models.dcgan.resolution_plan`, so both have exactly the same parameter counts:

* Generator: Linear(latent, base^2 * C0, bias=False) -> reshape (C0, base, base) -> BN ->
  ReLU -> [ConvTranspose2d(k4, s2, p1, bias=False) -> BN -> ReLU] * (n - 1) ->
  ConvTranspose2d(k4, s2, p1, bias=True) -> tanh, with C0 = width * 2**(n - 1) halving
  at every level.
* Discriminator: [Conv2d(k4, s2, p1) -> BN (all but the first, which has a bias
  instead) -> LeakyReLU(0.2)] * n -> flatten -> Linear(1).

Initialisation is DCGAN's (every weight N(0, 0.02), BatchNorm weights N(1, 0.02), biases
zero); BatchNorm uses eps 1e-5 and momentum 0.1 (flax's 0.9); both players use
Adam(2e-4, betas=(0.5, 0.999)). `TorchDcganTrainer.train_step` has the structure of
`cnnjax.train.gan_step.gan_train_step`: the generator runs forward once; the
discriminator is updated on real images and the detached fakes (BCE with logits); then
the generator is updated with the non-saturating loss of the *updated* discriminator on
the same fakes, back-propagated through the saved generator graph.

Only the parameters' layout differs (PyTorch's (out, in, kh, kw) kernels against flax's
(kh, kw, in, out), and the order of the projection's outputs): the functions computed are
the same family, not bit-identical weights.
"""

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from cnnjax.models.dcgan import resolution_plan

MEMORY_FORMATS = {"contiguous": torch.contiguous_format,
                  "channels_last": torch.channels_last}
# Precision -> autocast dtype (None: plain float32), as cnnjax's model.dtype.
AUTOCAST_DTYPES = {"float32": None, "bfloat16": torch.bfloat16}


class TorchGenerator(nn.Module):
  """Latents (B, latent_dim) -> images (B, channels, resolution, resolution) in [-1, 1].

  Args:
    resolution: output height and width (see `resolution_plan`).
    channels: output channels.
    latent_dim: size of the latent vectors.
    width: channels before the last upsampling; earlier layers double it per level.
  """

  def __init__(self, resolution: int, channels: int, latent_dim: int = 100,
               width: int = 64):
    super().__init__()
    self.base, doublings = resolution_plan(resolution)
    self.features = width * 2 ** (doublings - 1)
    self.project = nn.Linear(latent_dim, self.base * self.base * self.features,
                             bias=False)
    self.project_norm = nn.BatchNorm2d(self.features, eps=1e-5, momentum=0.1)
    layers: list[nn.Module] = []
    features = self.features
    for _ in range(doublings - 1):
      layers += [nn.ConvTranspose2d(features, features // 2, 4, 2, 1, bias=False),
                 nn.BatchNorm2d(features // 2, eps=1e-5, momentum=0.1),
                 nn.ReLU(inplace=True)]
      features //= 2
    layers += [nn.ConvTranspose2d(features, channels, 4, 2, 1, bias=True), nn.Tanh()]
    self.upsample = nn.Sequential(*layers)
    self.memory_format = torch.contiguous_format

  def forward(self, latents_bz: torch.Tensor) -> torch.Tensor:
    x = self.project(latents_bz)
    x = x.view(x.shape[0], self.features, self.base, self.base)
    x = x.contiguous(memory_format=self.memory_format)
    x = F.relu(self.project_norm(x))
    return self.upsample(x)


class TorchDiscriminator(nn.Module):
  """Images (B, channels, resolution, resolution) -> real/fake logits (B,).

  Args:
    resolution: input height and width (see `resolution_plan`).
    channels: input channels.
    width: channels after the first convolution; each later level doubles it.
  """

  def __init__(self, resolution: int, channels: int, width: int = 64):
    super().__init__()
    base, doublings = resolution_plan(resolution)
    layers: list[nn.Module] = []
    in_features, features = channels, width
    for level in range(doublings):
      layers.append(nn.Conv2d(in_features, features, 4, 2, 1, bias=level == 0))
      if level > 0:  # DCGAN: no BatchNorm on the discriminator's input layer.
        layers.append(nn.BatchNorm2d(features, eps=1e-5, momentum=0.1))
      layers.append(nn.LeakyReLU(0.2, inplace=True))
      in_features, features = features, features * 2
    self.features = nn.Sequential(*layers)
    self.classify = nn.Linear(in_features * base * base, 1)

  def forward(self, images_bchw: torch.Tensor) -> torch.Tensor:
    x = self.features(images_bchw)
    return self.classify(torch.flatten(x, 1))[:, 0]


def dcgan_init_(module: nn.Module) -> None:
  """DCGAN's initialisation, in place: weights N(0, 0.02), BN weights N(1, 0.02), biases 0."""
  for layer in module.modules():
    if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
      nn.init.normal_(layer.weight, 0.0, 0.02)
      if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    elif isinstance(layer, nn.BatchNorm2d):
      nn.init.normal_(layer.weight, 1.0, 0.02)
      nn.init.zeros_(layer.bias)


def count_parameters(module: nn.Module) -> int:
  """Number of trainable parameters (BatchNorm running statistics excluded)."""
  return sum(p.numel() for p in module.parameters())


@dataclasses.dataclass
class TorchDcganTrainer:
  """The PyTorch DCGAN, its optimizers and its training step.

  Attributes:
    generator, discriminator: the networks, in training mode.
    g_optimizer, d_optimizer: Adam(2e-4, betas=(0.5, 0.999)).
    latent_dim: size of the latent vectors.
    device: where the networks live.
    memory_format: `torch.contiguous_format` (NCHW) or `torch.channels_last` (NHWC).
    freeze_discriminator_in_g_step: skip the discriminator's (unused) weight gradients
      during the generator's backward pass, as cnnjax does (PyTorch's DCGAN example
      computes and then discards them).
    autocast_dtype: None for float32, else the `torch.autocast` dtype of the forward
      passes and losses (mixed precision: float32 weights, optimizer and backward
      accumulation), as cnnjax's `model.dtype`.
  """
  generator: TorchGenerator
  discriminator: TorchDiscriminator
  g_optimizer: torch.optim.Optimizer
  d_optimizer: torch.optim.Optimizer
  latent_dim: int
  device: torch.device
  memory_format: torch.memory_format
  freeze_discriminator_in_g_step: bool = True
  autocast_dtype: torch.dtype | None = None

  def _autocast(self):
    return torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                          enabled=self.autocast_dtype is not None)

  def prepare_images(self, images_bhwc) -> torch.Tensor:
    """A (B, H, W, C) float array -> a (B, C, H, W) tensor in this trainer's layout."""
    images = torch.as_tensor(images_bhwc, dtype=torch.float32, device=self.device)
    return images.permute(0, 3, 1, 2).contiguous(memory_format=self.memory_format)

  def train_step(self, real_bchw: torch.Tensor) -> dict[str, torch.Tensor]:
    """One discriminator update followed by one generator update.

    Args:
      real_bchw: real images from `prepare_images`, in [-1, 1].

    Returns:
      Detached scalar losses `d_loss` and `g_loss`.
    """
    batch_size = real_bchw.shape[0]
    latents = torch.randn(batch_size, self.latent_dim, device=self.device)
    with self._autocast():
      fakes = self.generator(latents)

    self.d_optimizer.zero_grad(set_to_none=True)
    with self._autocast():
      real_logits = self.discriminator(real_bchw)
      fake_logits = self.discriminator(fakes.detach())
      d_loss = (F.binary_cross_entropy_with_logits(real_logits,
                                                   torch.ones_like(real_logits))
                + F.binary_cross_entropy_with_logits(fake_logits,
                                                     torch.zeros_like(fake_logits)))
    d_loss.backward()
    self.d_optimizer.step()

    self.g_optimizer.zero_grad(set_to_none=True)
    if self.freeze_discriminator_in_g_step:
      self.discriminator.requires_grad_(False)
    with self._autocast():
      logits = self.discriminator(fakes)  # The updated discriminator.
      g_loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
    g_loss.backward()
    if self.freeze_discriminator_in_g_step:
      self.discriminator.requires_grad_(True)
    self.g_optimizer.step()
    return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach()}


def adam(params, learning_rate: float, b1: float, b2: float) -> torch.optim.Adam:
  """Adam; the fused kernel where this PyTorch build supports it (CPU since 2.4)."""
  try:
    return torch.optim.Adam(params, lr=learning_rate, betas=(b1, b2), fused=True)
  except (RuntimeError, TypeError, ValueError):
    return torch.optim.Adam(params, lr=learning_rate, betas=(b1, b2))


def build_trainer(resolution: int, channels: int, *, latent_dim: int = 100,
                  g_width: int = 64, d_width: int = 64, learning_rate: float = 2e-4,
                  b1: float = 0.5, b2: float = 0.999, memory_format: str = "contiguous",
                  device: str | torch.device = "cpu", seed: int = 0,
                  freeze_discriminator_in_g_step: bool = True,
                  precision: str = "float32") -> TorchDcganTrainer:
  """Builds and initialises the PyTorch DCGAN of cnnjax's `configs/dcgan.py` shape.

  Args:
    resolution: image height and width.
    channels: image channels.
    latent_dim: size of the latent vectors.
    g_width, d_width: the generator's and discriminator's widths.
    learning_rate, b1, b2: Adam's hyper-parameters (both players).
    memory_format: a key of `MEMORY_FORMATS`.
    device: torch device.
    seed: `torch.manual_seed` before initialisation.
    freeze_discriminator_in_g_step: see `TorchDcganTrainer`.
    precision: "float32", or "bfloat16" for bfloat16 autocast (mixed precision).
  """
  if precision not in AUTOCAST_DTYPES:
    raise ValueError(f"Unknown precision {precision!r}: use one of "
                     f"{', '.join(AUTOCAST_DTYPES)}.")
  if memory_format not in MEMORY_FORMATS:
    raise ValueError(f"Unknown memory format {memory_format!r}: use one of "
                     f"{', '.join(MEMORY_FORMATS)}.")
  fmt = MEMORY_FORMATS[memory_format]
  torch.manual_seed(seed)
  device = torch.device(device)
  generator = TorchGenerator(resolution, channels, latent_dim, g_width)
  discriminator = TorchDiscriminator(resolution, channels, d_width)
  for network in (generator, discriminator):
    dcgan_init_(network)
    network.to(device=device, memory_format=fmt)
    network.train()
  generator.memory_format = fmt
  return TorchDcganTrainer(
      generator=generator, discriminator=discriminator,
      g_optimizer=adam(generator.parameters(), learning_rate, b1, b2),
      d_optimizer=adam(discriminator.parameters(), learning_rate, b1, b2),
      latent_dim=latent_dim, device=device, memory_format=fmt,
      freeze_discriminator_in_g_step=freeze_discriminator_in_g_step,
      autocast_dtype=AUTOCAST_DTYPES[precision])


def cnnjax_parameter_counts(resolution: int, channels: int, *, latent_dim: int = 100,
                            g_width: int = 64, d_width: int = 64) -> tuple[int, int]:
  """(generator, discriminator) parameter counts of cnnjax's DCGAN, from shapes only."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from cnnjax.models import dcgan  # pylint: disable=g-import-not-at-top

  key = jax.random.key(0)

  def count(module, shape: tuple[int, ...]) -> int:
    variables = jax.eval_shape(lambda x: module.init(key, x, train=False),
                               jax.ShapeDtypeStruct(shape, np.float32))
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(variables["params"]))

  return (count(dcgan.Generator(resolution=resolution, channels=channels,
                                width=g_width), (1, latent_dim)),
          count(dcgan.Discriminator(resolution=resolution, width=d_width),
                (1, resolution, resolution, channels)))


def parameter_count_table(resolutions=(28, 32, 64), channels: int = 3, *,
                          latent_dim: int = 100, g_width: int = 64,
                          d_width: int = 64) -> str:
  """A markdown table of cnnjax's and this reference's parameter counts."""
  lines = ["| resolution | G cnnjax | G torch | D cnnjax | D torch | equal |",
           "|---:|---:|---:|---:|---:|:---:|"]
  for resolution in resolutions:
    jax_g, jax_d = cnnjax_parameter_counts(resolution, channels, latent_dim=latent_dim,
                                           g_width=g_width, d_width=d_width)
    torch_g = count_parameters(TorchGenerator(resolution, channels, latent_dim, g_width))
    torch_d = count_parameters(TorchDiscriminator(resolution, channels, d_width))
    equal = "yes" if (jax_g, jax_d) == (torch_g, torch_d) else "NO"
    lines.append(f"| {resolution}x{resolution} | {jax_g:,} | {torch_g:,} | {jax_d:,} | "
                 f"{torch_d:,} | {equal} |")
  return "\n".join(lines)


if __name__ == "__main__":
  # python -m experiments.benchmarks.torch_dcgan: parameter counts, 3 channels.
  print(parameter_count_table())
