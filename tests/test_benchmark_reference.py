"""The training-step benchmark: its PyTorch reference matches cnnjax, its cnnjax path runs."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from cnnjax.models import build_gan
from conftest import REPO_ROOT, load_config
from experiments.benchmarks import dcgan_step_bench, flops, timing

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
  step, get_state, step_flops = dcgan_step_bench.cnnjax_step_fn(config, channels=1)
  assert step_flops > 0
  variant = timing.Variant("cnnjax fast", tiny.train.batch_size, step)
  variant.time_step()
  state = get_state()
  assert int(state.step) == 1
  assert len(state.generator.params["Dense_0"]["kernel"].devices()) == 1
  assert np.isfinite(variant.images_per_second) and variant.images_per_second > 0


def test_torch_reference_bfloat16_autocast_keeps_float32_weights():
  torch = pytest.importorskip("torch")
  from experiments.benchmarks import torch_dcgan  # pylint: disable=g-import-not-at-top
  trainer = torch_dcgan.build_trainer(16, 3, latent_dim=8, g_width=4, d_width=4,
                                      precision="bfloat16")
  logit_dtypes = []
  trainer.discriminator.register_forward_hook(
      lambda module, args, output: logit_dtypes.append(output.dtype))
  images = np.random.default_rng(0).uniform(-1, 1, (4, 16, 16, 3)).astype(np.float32)
  before = [p.detach().clone() for p in trainer.generator.parameters()]
  losses = trainer.train_step(trainer.prepare_images(images))
  assert logit_dtypes == [torch.bfloat16] * 3  # Real, fake, and the generator's step.
  assert all(torch.isfinite(loss) and loss.dtype == torch.float32
             for loss in losses.values())
  assert all(p.dtype == torch.float32 for p in trainer.generator.parameters())
  assert any(not torch.equal(old, new.detach()) for old, new in
             zip(before, trainer.generator.parameters()))


def test_torch_reference_rejects_an_unknown_precision():
  pytest.importorskip("torch")
  from experiments.benchmarks import torch_dcgan  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="Unknown precision 'float16'"):
    torch_dcgan.build_trainer(16, 3, precision="float16")


def test_flop_counts_of_a_matmul():
  a, b = np.ones((8, 16), np.float32), np.ones((16, 4), np.float32)
  lowered = jax.jit(lambda a, b: a @ b).lower(a, b)
  assert flops.xla_flops(lowered) == 2 * 8 * 16 * 4
  torch = pytest.importorskip("torch")
  a_t, b_t = torch.from_numpy(a), torch.from_numpy(b)
  assert flops.torch_flops(lambda: a_t @ b_t) == 2 * 8 * 16 * 4


def test_peaks_come_from_datasheets_for_known_gpus_else_a_measured_matmul():
  assert flops.datasheet_peak("NVIDIA H100 80GB HBM3", "bfloat16")[0] == 989.4e12
  assert flops.datasheet_peak("NVIDIA H100 PCIe", "bfloat16")[0] == 756e12
  assert flops.datasheet_peak("NVIDIA H200", "float32")[0] == 494.7e12
  assert flops.datasheet_peak("cpu", "float32") is None
  peak, source = flops.peak_flops("float32", matmul_size=128)
  assert peak > 0 and source.startswith("fastest float32 matrix multiplication measured")


def test_report_compares_each_precision_with_its_own_pytorch_variants():
  seconds = {"cnnjax fast": 1.0, "torch channels_last 2t": 0.5,
             "cnnjax fast bf16": 0.25, "torch channels_last 2t bf16": 2.0}
  variants = []
  for name, time in seconds.items():
    variant = timing.Variant(name, 128, lambda: None)
    variant.times = [time]
    variants.append(variant)
  result = dcgan_step_bench.SizeResult(variants, xla_flops=1e12, torch_flops=1.2e12)
  text = dcgan_step_bench.report(
      {(32, 128): result}, repeats=1, warmup=0, flax_upsample_steps=0,
      peaks={"float32": (2e12, "float32 source"), "bfloat16": (8e12, "bf16 source")})
  header, _, row = [line for line in text.splitlines()
                    if line.startswith("|")][:3]
  cells = dict(zip((c.strip() for c in header.split("|")[1:-1]),
                   (c.strip() for c in row.split("|")[1:-1])))
  assert cells["cnnjax fast / best torch"] == "0.50x"
  assert cells["cnnjax fast bf16 / best torch bf16"] == "8.00x"
  assert cells["cnnjax fast bf16 (img/s)"] == "512.0"
  # Model FLOPs: PyTorch's count (1.2 TFLOP a step), then XLA's beside it.
  assert "| 32x32 | 128 | 1200.0 | 1000.0 | 1.200 (60%) | 2.400 (120%) | " in text
  assert "- bfloat16: 8.000 TFLOP/s, bf16 source" in text


def test_benchmark_rejects_an_unknown_precision_before_any_work(tmp_path):
  output = tmp_path / "bench.md"
  result = subprocess.run(
      [sys.executable, "-m", "experiments.benchmarks.dcgan_step_bench",
       "--precisions=float32,float16", f"--output={output}"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert ("flag --precisions=['float32', 'float16']: use float32 and/or bfloat16"
          in result.stderr)
  assert not output.exists()


VAE_CONFIG = load_config("vae.py")


def _cnnjax_vae_parameter_count(config, channels: int) -> int:
  """The VAE's parameter count, from shapes only (nothing computed)."""
  from cnnjax.models.vae import build_vae  # pylint: disable=g-import-not-at-top
  size = config.data.image_size
  vae = build_vae(config.model, resolution=size, channels=channels, num_parameters=1)
  variables = jax.eval_shape(lambda x: vae.init(jax.random.key(0), x),
                             jax.ShapeDtypeStruct((1, size, size, channels), np.float32))
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("variant,channels", [("", 1), ("tiny", 1), ("", 3)])
def test_torch_vae_reference_has_cnnjax_parameter_count(variant, channels):
  pytest.importorskip("torch")
  from experiments.benchmarks import torch_vae  # pylint: disable=g-import-not-at-top
  config = load_config("vae.py", variant) if variant else VAE_CONFIG
  trainer = torch_vae.build_trainer(
      config.data.image_size, channels, latent_dim=config.model.latent_dim,
      encoder_width=config.model.encoder_width, decoder_width=config.model.decoder_width)
  assert (torch_vae.count_parameters(trainer.encoder)
          + torch_vae.count_parameters(trainer.decoder)) == (
              _cnnjax_vae_parameter_count(config, channels))


def test_torch_vae_reference_initialises_like_flax_and_learns():
  torch = pytest.importorskip("torch")
  from experiments.benchmarks import torch_vae  # pylint: disable=g-import-not-at-top
  trainer = torch_vae.build_trainer(28, 1)
  # LeCun normal: the first convolution's weights have variance 1 / fan_in (16 inputs).
  weights = trainer.encoder.convs[0].weight.detach().numpy().ravel()
  assert abs(weights.var() * 16 - 1) < 0.15
  assert float(np.abs(weights).max()) <= 2 / 16 ** 0.5 / 0.8796 + 1e-6
  assert not any(torch.count_nonzero(layer.bias) for layer in trainer.decoder.modules()
                 if isinstance(layer, torch.nn.ConvTranspose2d))
  images = trainer.prepare_images(np.where(
      np.random.default_rng(0).uniform(size=(32, 28, 28, 1)) < 0.2, 1.0, -1.0
  ).astype(np.float32))
  first = float(trainer.train_step(images)["loss"])
  for _ in range(20):
    last = float(trainer.train_step(images)["loss"])
  assert np.isfinite(first) and last < first


def test_vae_benchmark_cnnjax_path_runs_one_step():
  from experiments.benchmarks import vae_step_bench  # pylint: disable=g-import-not-at-top
  tiny = load_config("vae.py", "tiny")
  config = vae_step_bench.cnnjax_config(tiny, batch_size=tiny.train.batch_size)
  step, get_state = vae_step_bench.cnnjax_step_fn(config)
  variant = timing.Variant("cnnjax", tiny.train.batch_size, step)
  variant.time_step()
  assert int(get_state().step) == 1
  assert np.isfinite(variant.images_per_second) and variant.images_per_second > 0


@pytest.mark.parametrize("height,width", [(16, 16), (19, 22)])
def test_torch_style_transformer_computes_the_flax_network(height, width):
  # 19x22 halves to sizes that are not exact doublings on the way back up: PyTorch's
  # "nearest-exact" must pick the same pixels as jax.image.resize's "nearest".
  torch = pytest.importorskip("torch")
  from cnnjax.models.style_transformer import StyleTransformer  # pylint: disable=g-import-not-at-top
  from experiments.benchmarks import torch_style_transformer as reference  # pylint: disable=g-import-not-at-top
  module = StyleTransformer(widths=(4, 8, 8), num_residual_blocks=2, outer_kernel=5)
  images = np.random.default_rng(0).uniform(-1, 1, (2, height, width, 3)).astype(np.float32)
  params = module.init(jax.random.PRNGKey(0), images)["params"]
  # Non-trivial norm parameters, so a swapped scale and bias would show.
  params = jax.tree.map(lambda leaf: leaf + 0.1 * np.random.default_rng(1).standard_normal(
      leaf.shape).astype(np.float32), params)
  expected = np.asarray(module.apply({"params": params}, images))
  torch_module = reference.TorchStyleTransformer((4, 8, 8), 2, 5).eval()
  reference.load_flax_params(torch_module, jax.device_get(params))
  assert reference.count_parameters(torch_module) == sum(
      leaf.size for leaf in jax.tree.leaves(params))
  with torch.no_grad():
    actual = torch_module(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  assert expected.shape == (2, height, width, 3)
  np.testing.assert_allclose(actual.transpose(0, 2, 3, 1), expected, atol=2e-5)


def test_torch_style_transformer_refuses_params_of_another_shape():
  pytest.importorskip("torch")
  from cnnjax.models.style_transformer import StyleTransformer  # pylint: disable=g-import-not-at-top
  from experiments.benchmarks import torch_style_transformer as reference  # pylint: disable=g-import-not-at-top
  params = StyleTransformer(widths=(4, 8, 8), num_residual_blocks=1, outer_kernel=5).init(
      jax.random.PRNGKey(0), np.zeros((1, 16, 16, 3), np.float32))["params"]
  with pytest.raises((RuntimeError, KeyError)):
    reference.load_flax_params(reference.TorchStyleTransformer((4, 8, 8), 2, 5), params)


def test_style_speed_benchmark_writes_its_report(tmp_path):
  pytest.importorskip("torch")
  output = tmp_path / "speed.md"
  subprocess.run(
      [sys.executable, "-m", "experiments.benchmarks.style_speed", "--size=32",
       "--steps=2", "--repeats=2", "--warmup=1", "--networks=default",
       "--torch_memory_formats=contiguous", "--torch_threads=1",
       "--contents=skimage:astronaut", "--gatys_config=configs/style_transfer.py:tiny",
       f"--output={output}"], cwd=REPO_ROOT, check=True, capture_output=True, timeout=300)
  text = output.read_text()
  assert "Gatys lbfgs (2 steps)" in text and "default torch contiguous 1t" in text
  results = json.loads((tmp_path / "speed.json").read_text())
  assert {row["optimizer"] for row in results["gatys"]} == {"lbfgs", "adam"}
  assert all(row["seconds_per_image"] > 0 for row in results["gatys"] + results["feed_forward"])
  assert [len(row["seconds"]) for row in results["feed_forward"]] == [2, 2]
  assert results["networks"]["default"]["max_abs_difference"] < 1e-4


@pytest.mark.parametrize("module,flag,out_flag,message", [
    ("experiments.benchmarks.style_speed", "--networks=bogus", "--output",
     "Unknown --networks entry 'bogus'"),
    ("experiments.benchmarks.style_speed", "--optimizers=sgd", "--output",
     "Unknown --optimizers entry 'sgd'"),
    ("experiments.style_transfer_results", "--sweep_workdir=/nonexistent/sweep", "--out",
     "no trained fast-style run at /nonexistent/sweep/"),
])
def test_style_scripts_refuse_bad_flags_in_one_line_before_any_work(
    module, flag, out_flag, message, tmp_path):
  out = tmp_path / "out"
  result = subprocess.run([sys.executable, "-m", module, flag, f"{out_flag}={out}"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert message in result.stderr, result.stderr
  assert not out.exists()
