"""The training-step benchmark: its PyTorch reference matches cnnjax, its cnnjax path runs."""

import jax
import numpy as np
import pytest

from cnnjax.models import build_gan
from conftest import load_config
from experiments.benchmarks import dcgan_step_bench

CONFIG = load_config("dcgan.py")


def _cnnjax_parameter_counts(resolution: int, channels: int) -> tuple[int, int]:
  """(generator, discriminator) parameter counts, from shapes only (nothing computed)."""
  generator, discriminator = build_gan(CONFIG.model, resolution=resolution,
                                       channels=channels, axis_name=None)
  key = jax.random.key(0)

  def count(module, example) -> int:
    variables = jax.eval_shape(lambda x: module.init(key, x, train=False), example)
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(variables["params"]))

  return (count(generator, jax.ShapeDtypeStruct((1, CONFIG.model.latent_dim), np.float32)),
          count(discriminator, jax.ShapeDtypeStruct(
              (1, resolution, resolution, channels), np.float32)))


@pytest.mark.parametrize("resolution,channels", [(28, 1), (32, 3), (64, 3)])
def test_torch_reference_has_cnnjax_parameter_counts(resolution, channels):
  pytest.importorskip("torch")
  from experiments.benchmarks import torch_dcgan  # pylint: disable=g-import-not-at-top
  trainer = torch_dcgan.build_trainer(
      resolution, channels, latent_dim=CONFIG.model.latent_dim,
      g_width=CONFIG.model.g_width, d_width=CONFIG.model.d_width)
  assert (torch_dcgan.count_parameters(trainer.generator),
          torch_dcgan.count_parameters(trainer.discriminator)) == (
              _cnnjax_parameter_counts(resolution, channels))


def test_torch_reference_step_runs_in_both_memory_formats():
  torch = pytest.importorskip("torch")
  from experiments.benchmarks import torch_dcgan  # pylint: disable=g-import-not-at-top
  images = np.random.default_rng(0).uniform(-1, 1, (4, 16, 16, 3)).astype(np.float32)
  for memory_format in torch_dcgan.MEMORY_FORMATS:
    trainer = torch_dcgan.build_trainer(16, 3, latent_dim=8, g_width=4, d_width=4,
                                        memory_format=memory_format)
    before = [p.detach().clone() for p in trainer.generator.parameters()]
    losses = trainer.train_step(trainer.prepare_images(images))
    assert all(torch.isfinite(loss) for loss in losses.values())
    assert any(not torch.equal(old, new.detach()) for old, new in
               zip(before, trainer.generator.parameters()))
    assert all(p.requires_grad for p in trainer.discriminator.parameters())


def test_benchmark_cnnjax_path_runs_one_step():
  # The tiny config's own size and batch: the same program as tests/test_gan_step.py's
  # one-device one, so the session's compilation cache serves whichever runs second.
  tiny = load_config("dcgan.py", "tiny")
  config = dcgan_step_bench.cnnjax_config(
      tiny, resolution=tiny.data.image_size, batch_size=tiny.train.batch_size,
      upsample="fast")
  step, get_state = dcgan_step_bench.cnnjax_step_fn(config, channels=1)
  variant = dcgan_step_bench.Variant("cnnjax fast", tiny.train.batch_size, step)
  variant.time_step()
  state = get_state()
  assert int(state.step) == 1
  assert len(state.generator.params["Dense_0"]["kernel"].devices()) == 1
  assert np.isfinite(variant.images_per_second) and variant.images_per_second > 0
