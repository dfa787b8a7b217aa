"""The README's style-transfer results: a content x style grid of both methods, and the
loss curves of both.

For each style image of `experiments/fast_style_styles.py`, the content photographs are
stylised (1) by Gatys et al.'s optimisation (`run.py stylize --style=...`, the config
given by --gatys_config, default configs/style_transfer.py: random-weight features,
100 L-BFGS steps at 128 px) and (2) by the fast network trained for that style in the
sweep's work directory (`run.py stylize --workdir=...`), both through the commands'
own code, into `--out/<method>_<style>/`. Then:

  grid.png        one row per content image: content, then per style its Gatys and its
                  feed-forward result; a header row shows each style image;
  curves.png      the fast networks' training losses (total, content, style per step)
                  and Gatys's L-BFGS curves per content image;
  summary.json    per method, style and content the final content, style, tv and total
                  losses, and each method's seconds per image.

  python run.py sweep --sweep=experiments/fast_style_styles.py --workdir=workdirs/fast_style_styles
  python -m experiments.style_transfer_results --sweep_workdir=workdirs/fast_style_styles --out=results/style_transfer/methods

--gatys_config takes a variant and overrides as run.py's --config does
(`--gatys_config=configs/style_transfer.py --gatys_config.optimizer.name=adam`).

With VGG19 weights on disk, `--gatys_network=vgg19 --weights_path=...` uses them for the
optimisation (the fast runs use whatever network their sweep trained with).
"""

import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags
import numpy as np

from cnnjax.data.photos import image_name, load_image
from cnnjax.errors import CnnjaxError
from cnnjax.io.images import make_grid, save_png
from cnnjax.io.workdir import write_json_atomic
from cnnjax.style.fast_stylize import run_fast_stylize
from cnnjax.style.stylize_run import run_stylize
from cnnjax.sweeps.spec import run_name
from experiments.fast_style_styles import STYLES

_SWEEP_WORKDIR = flags.DEFINE_string("sweep_workdir", "workdirs/fast_style_styles",
                                     "The work directory of fast_style_styles's sweep.")
_OUT = flags.DEFINE_string("out", "results/style_transfer/methods", "Output directory.")
_CONTENTS = flags.DEFINE_list("contents", ["skimage:astronaut", "skimage:chelsea"],
                              "Content images (files or skimage:NAME).")
_SIZE = flags.DEFINE_integer("size", 128, "Image side of both methods' results.")
_GATYS_CONFIG = config_flags.DEFINE_config_file(
    "gatys_config", "configs/style_transfer.py",
    "The optimisation's config (its image_size and features come from --size, "
    "--gatys_network and --weights_path).", lock_config=True)
_GATYS_NETWORK = flags.DEFINE_enum("gatys_network", "random", ["random", "vgg19"],
                                   "The optimisation's feature network.")
_WEIGHTS_PATH = flags.DEFINE_string("weights_path", "", "vgg19: the weight file.")


def _gatys_config():
  config = _GATYS_CONFIG.value.copy_and_resolve_references()
  config.image_size = _SIZE.value
  config.features.network = _GATYS_NETWORK.value
  config.features.weights_path = _WEIGHTS_PATH.value
  return config


def _curves_plot(path: str, fast_runs: dict[str, str], gatys: dict[str, dict]) -> None:
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  figure, axes = plt.subplots(1, 4, figsize=(17, 3.4))
  for style, workdir in fast_runs.items():
    lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    steps = [line["step"] for line in lines]
    for axis, term in zip(axes[:3], ("loss", "content", "style")):
      axis.plot(steps, [line[term] for line in lines], label=image_name(style))
  for axis, term in zip(axes[:3], ("total", "content", "style")):
    axis.set_title(f"fast network: {term} (training batches)")
    axis.set_xlabel("step")
    axis.set_yscale("log")
  for style, result in gatys.items():
    for item in result["images"]:
      axes[3].plot(item["curves"]["total"],
                   label=f"{image_name(item['content'])} x {image_name(style)}")
  axes[3].set_title("Gatys L-BFGS: total per step")
  axes[3].set_xlabel("step")
  axes[3].set_yscale("log")
  axes[0].legend(fontsize="small")
  axes[3].legend(fontsize="x-small")
  figure.tight_layout()
  figure.savefig(path, dpi=80)
  plt.close(figure)


def _fail(message: str) -> None:
  sys.stderr.write(f"error: {message}\n")
  sys.exit(2)


def main(argv) -> None:
  del argv
  out = os.path.abspath(_OUT.value)
  contents = _CONTENTS.value
  size = _SIZE.value
  config = _gatys_config()
  fast_runs = {style: os.path.join(_SWEEP_WORKDIR.value,
                                   run_name({"style_image": style}, seed=0))
               for style in STYLES}
  missing = [run for run in fast_runs.values()
             if not os.path.isdir(os.path.join(run, "checkpoints"))]
  if missing:   # Before minutes of optimisation.
    _fail(f"no trained fast-style run at {', '.join(missing)}: run `python run.py sweep "
          f"--sweep=experiments/fast_style_styles.py --workdir={_SWEEP_WORKDIR.value}` "
          "first, or pass its --sweep_workdir.")
  if os.path.exists(out) and not os.path.isdir(out):
    _fail(f"--out={out} is a file: pass a directory (created if missing).")
  os.makedirs(out, exist_ok=True)
  gatys, fast = {}, {}
  try:
    for style in STYLES:
      name = image_name(style)
      gatys[style] = run_stylize(config, content_specs=contents, style_spec=style,
                                 out_dir=os.path.join(out, f"gatys_{name}"))
      fast[style] = run_fast_stylize(fast_runs[style], content_specs=contents,
                                     out_dir=os.path.join(out, f"fast_{name}"), size=size)
  except CnnjaxError as error:
    _fail(str(error))

  # Header: a blank cell, then each style image over its two columns.
  blank = np.ones((size, size, 3), np.float32)
  header = [blank] + [image for style in STYLES for image in [load_image(style, size)] * 2]
  rows = [header]
  for index, content in enumerate(contents):
    row = [load_image(content, size)]
    for style in STYLES:
      name = image_name(style)
      file = gatys[style]["images"][index]["file"]
      row.append(load_image(os.path.join(out, f"gatys_{name}", file), size))
      row.append(load_image(os.path.join(out, f"fast_{name}", file), size))
    rows.append(row)
  save_png(os.path.join(out, "grid.png"),
           make_grid(np.stack([image for row in rows for image in row]),
                     num_cols=len(header)))
  _curves_plot(os.path.join(out, "curves.png"), fast_runs, gatys)

  summary = {"contents": contents, "styles": list(STYLES), "image_size": size,
             "grid_columns": ["content"] + [f"{method} {image_name(style)}"
                                            for style in STYLES
                                            for method in ("gatys", "fast")],
             "methods": {}}
  for method, results in (("gatys", gatys), ("fast", fast)):
    summary["methods"][method] = {
        style: {"seconds_per_image": result["seconds_per_image"],
                "network": result["network"],
                "images": {item["content"]: item["final"] for item in result["images"]}}
        for style, result in results.items()}
  write_json_atomic(os.path.join(out, "summary.json"), summary)
  for style in STYLES:
    for method, results in (("gatys", gatys), ("fast", fast)):
      for item in results[style]["images"]:
        logging.info("%s %s x %s: content %.4g style %.4g total %.4g (%.4f s/image)",
                     method, item["content"], style, item["final"]["content"],
                     item["final"]["style"], item["final"]["total"],
                     results[style]["seconds_per_image"])


if __name__ == "__main__":
  app.run(main)
