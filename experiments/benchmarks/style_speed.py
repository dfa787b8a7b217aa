r"""Seconds per image of style transfer: Gatys et al.'s optimisation against Johnson et
al.'s feed-forward network, and cnnjax's network against the identical PyTorch one.

In one run, on the same content images (`--contents`, resized to `--size`) and style
image (`--style`):

* Gatys, as `run.py stylize` runs it (`cnnjax.style.gatys.stylize`, the feature network
  and loss of `--gatys_config`), with `--steps` steps of L-BFGS and of Adam; all images
  at once on one device; compilation is reported apart and never counted;
* the feed-forward network (`cnnjax.models.style_transformer.StyleTransformer`) in each
  of `--networks` (`default`: configs/fast_style.py's widths; `johnson`: Johnson et al.'s
  32/64/128 with five residual blocks), jitted with cnnjax's XLA options
  (`cnnjax.train.parallel.compiler_options`), and the identical PyTorch network
  (`experiments.benchmarks.torch_style_transformer`, the same weights copied in) under
  `torch.no_grad()` for each of `--torch_memory_formats` and `--torch_threads`.

A forward pass costs the same whatever the weights, so the networks are freshly
initialised from the seed; a trained run's (`run.py stylize --workdir`) are the same
shapes. The feed-forward variants are timed as every benchmark here is
(`experiments.benchmarks.timing`): `--warmup` untimed passes, then `--repeats` timed
ones, interleaved round-robin; the median counts. Gatys runs once per optimiser (one
run is already `--steps` forward and backward passes per image).

  python -m experiments.benchmarks.style_speed --size=128 --steps=100 \
      --output=results/style_transfer/speed.md

writes the Markdown report and, beside it, the same numbers as JSON (`speed.json`).
"""

import functools
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

if __package__ in (None, ""):  # Run as a file: make the repository importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__)))))

from absl import app, flags, logging  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from cnnjax.data.photos import load_image  # noqa: E402
from cnnjax.models.style_features import build_feature_network  # noqa: E402
from cnnjax.models.style_transformer import StyleTransformer  # noqa: E402
from cnnjax.style import gatys  # noqa: E402
from cnnjax.train import parallel  # noqa: E402
from experiments.benchmarks.timing import (Variant, command_line,  # noqa: E402
                                           define_torch_flags, machine_lines,
                                           markdown_table, time_interleaved,
                                           usable_cores)

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Feed-forward network shapes: (widths, residual blocks, outer kernel).
NETWORKS = {"default": ((16, 32, 64), 3, 9), "johnson": ((32, 64, 128), 5, 9)}
OPTIMIZERS = ("lbfgs", "adam")

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines the benchmark's flags (only when run, so importing it defines none)."""
  flags.DEFINE_integer("size", 128, "Image side (content, style and results).")
  flags.DEFINE_integer("steps", 100, "Gatys optimisation steps per image.")
  flags.DEFINE_list("contents", ["skimage:astronaut", "skimage:chelsea"],
                    "Content images (files or skimage:NAME).")
  flags.DEFINE_string("style", "skimage:coffee", "The style image.")
  config_flags.DEFINE_config_file(
      "gatys_config", os.path.join(_REPO_ROOT, "configs", "style_transfer.py"),
      "The optimisation's config (its features and loss; image_size and "
      "optimizer.steps come from --size and --steps).", lock_config=False)
  flags.DEFINE_list("optimizers", list(OPTIMIZERS), "Gatys optimisers to time.")
  flags.DEFINE_list("networks", list(NETWORKS), "Feed-forward network shapes to time.")
  flags.DEFINE_integer("repeats", 10, "Timed feed-forward passes per variant.")
  flags.DEFINE_integer("warmup", 2, "Untimed feed-forward passes per variant.")
  define_torch_flags(default_threads=["0"])


def time_gatys(config, contents: np.ndarray, style: np.ndarray,
               optimizer: str) -> dict[str, Any]:
  """One optimisation of every content image; seconds per image and compile seconds."""
  config = config.copy_and_resolve_references()
  config.optimizer.name = optimizer
  network = build_feature_network(config, image_size=contents.shape[1])
  settings = gatys.settings_from_config(config)
  result = gatys.stylize(network, settings, contents, style, seed=config.seed,
                         devices=jax.devices()[:1])
  num = contents.shape[0]
  logging.info("gatys %s: %.2f s for %d images (compiled in %.1f s)", optimizer,
               result.run_seconds, num, result.compile_seconds)
  return {"seconds_per_image": result.run_seconds / num,
          "compile_seconds": result.compile_seconds,
          "final_total": float(np.mean(result.curves["total"][:, -1]))}


def feed_forward_variants(name: str, contents: np.ndarray, *, torch_formats: Sequence[str],
                          torch_threads: Sequence[int], seed: int = 0
                          ) -> tuple[list[Variant], int, float]:
  """The cnnjax and PyTorch forward passes of network `name` on `contents`.

  Returns:
    (variants, parameter count, largest |cnnjax - torch| over the outputs, or nan
    without torch variants).
  """
  widths, blocks, kernel = NETWORKS[name]
  module = StyleTransformer(widths=widths, num_residual_blocks=blocks, outer_kernel=kernel)
  device = jax.devices()[0]
  inputs = jax.device_put(contents, device)
  params = jax.jit(module.init)(jax.random.PRNGKey(seed), inputs)["params"]
  # The XLA options of cnnjax's own programs (`run.py stylize --workdir` compiles with
  # them): on CPU they route convolutions' dots to a faster library path.
  apply = jax.jit(lambda p, x: module.apply({"params": p}, x),
                  compiler_options=parallel.compiler_options(
                      parallel.make_data_mesh([device])))
  holder = {}

  def cnnjax_step() -> None:
    holder["cnnjax"] = jax.block_until_ready(apply(params, inputs))

  cnnjax_step()   # Compiles (untimed, like every variant's warm-up).
  count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))
  num = contents.shape[0]
  variants = [Variant(f"{name} cnnjax", num, cnnjax_step)]
  gap = float("nan")
  if torch_formats:
    import torch  # pylint: disable=g-import-not-at-top
    from experiments.benchmarks import torch_style_transformer as reference  # pylint: disable=g-import-not-at-top
    from experiments.benchmarks.torch_dcgan import MEMORY_FORMATS  # pylint: disable=g-import-not-at-top
    torch_module = reference.TorchStyleTransformer(widths, blocks, kernel).eval()
    reference.load_flax_params(torch_module, jax.device_get(params))
    images = torch.from_numpy(np.ascontiguousarray(np.transpose(contents, (0, 3, 1, 2))))
    with torch.no_grad():
      gap = float(np.max(np.abs(np.transpose(torch_module(images).numpy(), (0, 2, 3, 1))
                                - np.asarray(holder["cnnjax"]))))
    for memory_format in torch_formats:
      fmt = MEMORY_FORMATS[memory_format]
      formatted = torch_module.to(memory_format=fmt)
      batch = images.contiguous(memory_format=fmt)
      for threads in torch_threads:

        def torch_step(formatted=formatted, batch=batch) -> None:
          with torch.no_grad():
            formatted(batch)

        variants.append(Variant(
            f"{name} torch {memory_format} {threads}t", num, torch_step,
            prepare=functools.partial(torch.set_num_threads, threads)))
  return variants, count, gap


def report(results: dict[str, Any]) -> str:
  """The Markdown report of `results` (see `main`)."""
  fastest = min(row["seconds_per_image"] for row in results["feed_forward"]
                if row["implementation"] == "cnnjax")
  lines = [f"# Style transfer: seconds per image, {results['size']}x{results['size']}",
           "", *results["machine"], f"- Command: `{results['command']}`",
           f"- Images: {', '.join(results['contents'])} stylised with "
           f"{results['style']}; Gatys: `{results['gatys_config']}` (its features and "
           f"loss), {results['steps']} steps, all images at once on one device, "
           "compilation excluded; feed-forward: the median of "
           f"{results['repeats']} timed passes after {results['warmup']} untimed ones, "
           "the variants interleaved.", "",
           "## Optimisation against one forward pass", ""]
  rows = [[f"Gatys {row['optimizer']} ({results['steps']} steps)",
           f"{row['seconds_per_image']:.4g}", f"{row['compile_seconds']:.1f}",
           f"{row['seconds_per_image'] / fastest:,.0f}x"]
          for row in results["gatys"]]
  rows += [[f"feed-forward {row['network']} {row['implementation']}"
            f"{'' if row['implementation'] == 'cnnjax' else ' ' + row['variant']}",
            f"{row['seconds_per_image']:.4g}", "", f"{row['seconds_per_image'] / fastest:.2f}x"]
           for row in results["feed_forward"]]
  lines.append(markdown_table(["method", "s / image", "compile s",
                               "/ fastest cnnjax feed-forward"], rows))
  lines += ["", "## cnnjax against PyTorch (feed-forward)", ""]
  rows = []
  for network, info in results["networks"].items():
    own = [row for row in results["feed_forward"] if row["network"] == network]
    mine = next(row for row in own if row["implementation"] == "cnnjax")
    torch_rows = [row for row in own if row["implementation"] == "torch"]
    if torch_rows:
      best = min(torch_rows, key=lambda row: row["seconds_per_image"])
      rows.append([network, f"{info['parameters']:,}", f"{mine['seconds_per_image']:.4g}",
                   f"{best['seconds_per_image']:.4g} ({best['variant']})",
                   f"{best['seconds_per_image'] / mine['seconds_per_image']:.2f}x",
                   f"{info['max_abs_difference']:.2g}"])
  if rows:
    lines.append(markdown_table(["network", "parameters", "cnnjax s / image",
                                 "best torch s / image", "cnnjax speed-up",
                                 "max |cnnjax - torch|"], rows))
  else:
    lines.append("PyTorch was not timed (--noinclude_torch or not installed).")
  return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> None:
  del argv
  for name in FLAGS.networks:
    if name not in NETWORKS:
      raise app.UsageError(f"Unknown --networks entry {name!r}: use "
                           f"{', '.join(NETWORKS)}.")
  for name in FLAGS.optimizers:
    if name not in OPTIMIZERS:
      raise app.UsageError(f"Unknown --optimizers entry {name!r}: use "
                           f"{', '.join(OPTIMIZERS)}.")
  torch_formats = list(FLAGS.torch_memory_formats) if FLAGS.include_torch else []
  if torch_formats:
    try:
      import torch  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      logging.warning("PyTorch is not installed: timing cnnjax only.")
      torch_formats = []
  torch_threads = [int(n) or usable_cores() for n in FLAGS.torch_threads]
  size = FLAGS.size
  contents = np.stack([load_image(spec, size) for spec in FLAGS.contents])
  style = load_image(FLAGS.style, size)
  config = FLAGS.gatys_config
  config.image_size = size
  config.optimizer.steps = FLAGS.steps

  results: dict[str, Any] = {
      "size": size, "steps": FLAGS.steps, "contents": list(FLAGS.contents),
      "style": FLAGS.style, "gatys_config": os.path.relpath(
          config_flags.get_config_filename(FLAGS["gatys_config"]), _REPO_ROOT),
      "repeats": FLAGS.repeats, "warmup": FLAGS.warmup, "command": command_line(),
      "gatys": [], "feed_forward": [], "networks": {}}
  load = [os.getloadavg()[0]]
  for optimizer in FLAGS.optimizers:
    results["gatys"].append({"optimizer": optimizer,
                             **time_gatys(config, contents, style, optimizer)})
  for name in FLAGS.networks:
    variants, count, gap = feed_forward_variants(
        name, contents, torch_formats=torch_formats, torch_threads=torch_threads)
    time_interleaved(variants, repeats=FLAGS.repeats, warmup=FLAGS.warmup, label=name)
    results["networks"][name] = {"widths": list(NETWORKS[name][0]),
                                 "residual_blocks": NETWORKS[name][1],
                                 "parameters": count, "max_abs_difference": gap}
    for variant in variants:
      implementation = "cnnjax" if variant.name.endswith("cnnjax") else "torch"
      results["feed_forward"].append({
          "network": name, "implementation": implementation,
          "variant": variant.name.removeprefix(f"{name} torch ").removeprefix(name + " "),
          "seconds_per_image": variant.median_seconds / variant.batch_size,
          "seconds": variant.times})
  load.append(os.getloadavg()[0])
  results["machine"] = machine_lines(load, devices_used=1)
  text = report(results)
  logging.info("\n%s", text)
  if FLAGS.output:
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    with open(FLAGS.output, "w", encoding="utf-8") as output:
      output.write(text)
    with open(os.path.splitext(FLAGS.output)[0] + ".json", "w",
              encoding="utf-8") as output:
      json.dump(results, output, indent=1)
    logging.info("Wrote %s", FLAGS.output)


if __name__ == "__main__":
  define_flags()
  app.run(main)
