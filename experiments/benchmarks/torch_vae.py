"""A PyTorch convolutional VAE identical to cnnjax's, and its training step.

The reference of `experiments/benchmarks/vae_step_bench.py`. The networks match
`cnnjax.models.vae` layer for layer, with the levels of
`cnnjax.models.dcgan.resolution_plan`, so both have exactly the same parameter counts:

* Encoder: [Conv2d(k4, s2, p1) -> ReLU] * n with width * 2**level channels -> flatten ->
  Linear(2 * latent) (mean and log-variance).
* Decoder: Linear(latent, base^2 * C0) -> ReLU -> reshape (C0, base, base) ->
  [ConvTranspose2d(k4, s2, p1) -> ReLU] * (n - 1) -> ConvTranspose2d(k4, s2, p1) to the
  image's channels (Bernoulli logits), with C0 = width * 2**(n - 1) halving per level.

Initialisation is flax's default (LeCun normal weights: a truncated normal with variance
1 / fan_in; zero biases) and the optimizer is Adam(1e-3, betas=(0.9, 0.999)), as in
`configs/vae.py`. `TorchVaeTrainer.train_step` has the structure of
`cnnjax.train.vae_step.vae_train_step`: binarise the batch by sampling, encode, sample
the latents by reparameterisation, decode, and take one Adam step on the negative ELBO
(Bernoulli reconstruction + KL to the standard normal, summed per image, averaged over
the batch).
"""

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from cnnjax.models.dcgan import resolution_plan
from experiments.benchmarks import torch_dcgan

MEMORY_FORMATS = torch_dcgan.MEMORY_FORMATS


def lecun_normal_(weight: torch.Tensor, fan_in: int) -> None:
  """flax's default kernel init: truncated normal (2 std) with variance 1 / fan_in."""
  # jax's truncated normal is rescaled so the *truncated* distribution has unit variance.
  std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
  nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


class TorchEncoder(nn.Module):
  """Images (B, C, R, R) in [-1, 1] -> (mean (B, Z), log-variance (B, Z))."""

  def __init__(self, resolution: int, channels: int, latent_dim: int, width: int):
    super().__init__()
    base, doublings = resolution_plan(resolution)
    layers: list[nn.Module] = []
    features_in = channels
    for level in range(doublings):
      layers += [nn.Conv2d(features_in, width * 2 ** level, 4, 2, 1), nn.ReLU()]
      features_in = width * 2 ** level
    self.convs = nn.Sequential(*layers)
    self.posterior = nn.Linear(base * base * features_in, 2 * latent_dim)

  def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    stats = self.posterior(torch.flatten(self.convs(images), 1))
    mean, log_variance = stats.chunk(2, dim=1)
    return mean, log_variance


class TorchDecoder(nn.Module):
  """Latents (B, Z) -> Bernoulli logits (B, C, R, R)."""

  def __init__(self, resolution: int, channels: int, latent_dim: int, width: int):
    super().__init__()
    self.base, doublings = resolution_plan(resolution)
    self.features = width * 2 ** (doublings - 1)
    self.project = nn.Linear(latent_dim, self.base * self.base * self.features)
    layers: list[nn.Module] = []
    features = self.features
    for _ in range(doublings - 1):
      layers += [nn.ConvTranspose2d(features, features // 2, 4, 2, 1), nn.ReLU()]
      features //= 2
    layers.append(nn.ConvTranspose2d(features, channels, 4, 2, 1))
    self.upsample = nn.Sequential(*layers)
    self.memory_format = torch.contiguous_format

  def forward(self, latents: torch.Tensor) -> torch.Tensor:
    x = F.relu(self.project(latents))
    x = x.view(x.shape[0], self.features, self.base, self.base)
    return self.upsample(x.contiguous(memory_format=self.memory_format))


def initialise_like_flax(module: nn.Module) -> None:
  """LeCun-normal weights (fan-in from the kernel's receptive field) and zero biases."""
  for layer in module.modules():
    if isinstance(layer, nn.Linear):
      lecun_normal_(layer.weight, layer.in_features)
    elif isinstance(layer, nn.Conv2d):
      lecun_normal_(layer.weight, layer.in_channels * layer.weight[0, 0].numel())
    elif isinstance(layer, nn.ConvTranspose2d):
      # flax's ConvTranspose kernel is (kh, kw, in, out): fan-in = kh * kw * in.
      lecun_normal_(layer.weight, layer.in_channels * layer.weight[0, 0].numel())
    else:
      continue
    nn.init.zeros_(layer.bias)


def count_parameters(module: nn.Module) -> int:
  return sum(p.numel() for p in module.parameters())


@dataclasses.dataclass
class TorchVaeTrainer:
  """The VAE and its optimizer on one device; `train_step` is one Adam step."""
  encoder: TorchEncoder
  decoder: TorchDecoder
  optimizer: torch.optim.Optimizer
  memory_format: torch.memory_format
  device: torch.device
  latent_dim: int

  def prepare_images(self, images_bhwc) -> torch.Tensor:
    """NHWC numpy images in [-1, 1] -> a (B, C, H, W) tensor in the memory format."""
    images = torch.from_numpy(images_bhwc).permute(0, 3, 1, 2).to(self.device)
    return images.contiguous(memory_format=self.memory_format)

  def train_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """One step on the negative ELBO of dynamically binarised `images`."""
    targets = torch.bernoulli((images + 1) / 2)
    mean, log_variance = self.encoder(images)
    latents = mean + torch.exp(0.5 * log_variance) * torch.randn_like(mean)
    logits = self.decoder(latents)
    reconstruction = F.binary_cross_entropy_with_logits(
        logits, targets, reduction="sum") / images.shape[0]
    kl = 0.5 * torch.sum(mean ** 2 + log_variance.exp() - 1 - log_variance) / (
        images.shape[0])
    loss = reconstruction + kl
    self.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    self.optimizer.step()
    return {"loss": loss.detach(), "kl": kl.detach()}


def build_trainer(resolution: int, channels: int, *, latent_dim: int = 16,
                  encoder_width: int = 32, decoder_width: int = 32,
                  learning_rate: float = 1e-3, b1: float = 0.9, b2: float = 0.999,
                  memory_format: str = "contiguous", device: str = "cpu",
                  seed: int = 0) -> TorchVaeTrainer:
  """The reference VAE of `configs/vae.py`'s model section, initialised like flax."""
  torch.manual_seed(seed)
  encoder = TorchEncoder(resolution, channels, latent_dim, encoder_width)
  decoder = TorchDecoder(resolution, channels, latent_dim, decoder_width)
  initialise_like_flax(encoder)
  initialise_like_flax(decoder)
  torch_format = MEMORY_FORMATS[memory_format]
  encoder = encoder.to(device=device, memory_format=torch_format)
  decoder = decoder.to(device=device, memory_format=torch_format)
  decoder.memory_format = torch_format
  parameters = list(encoder.parameters()) + list(decoder.parameters())
  optimizer = torch_dcgan.adam(parameters, learning_rate, b1, b2)
  return TorchVaeTrainer(encoder=encoder, decoder=decoder, optimizer=optimizer,
                         memory_format=torch_format, device=torch.device(device),
                         latent_dim=latent_dim)
