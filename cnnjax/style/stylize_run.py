"""`run.py stylize`'s work: read the images, stylise them, write the results.

Into the output directory:
  stylized_<name>.png   each content image's result (`name`: the file's stem or the
                        scikit-image example's name; made unique with its index);
  grid.png              one row per content image: content | style | result;
  losses.png            the loss curves (content, style, tv, total per step; log scale;
                        only when matplotlib is installed);
  stylize.json          per image the final losses and the curves, plus the seconds of
                        compilation and of optimisation, per image, and the config.

Bad input (config, images, weights, output directory) raises a one-line `CnnjaxError`
before anything is written.
"""

import os
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from cnnjax.errors import WorkdirError
from cnnjax.io.images import make_grid, save_png
from cnnjax.io.workdir import write_json_atomic
from cnnjax.data import photos as style_images
from cnnjax.models import style_features
from cnnjax.style import gatys

RESULT_FILE = "stylize.json"
GRID_FILE = "grid.png"
CURVES_FILE = "losses.png"


def check_out_dir(out_dir: str) -> str:
  """The absolute output directory; `WorkdirError` if it is a file."""
  out_dir = os.path.abspath(os.path.expanduser(out_dir))
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise WorkdirError(f"--out {out_dir} is a file: pass a directory (created if "
                       "missing).")
  return out_dir


def _file_names(content_specs: Sequence[str]) -> list[str]:
  names = [style_images.image_name(spec) for spec in content_specs]
  return [f"stylized_{name}.png" if names.count(name) == 1 else
          f"stylized_{name}_{index}.png" for index, name in enumerate(names)]


def write_images(out_dir: str, content_specs: Sequence[str], contents_nhwc: np.ndarray,
                 style_hwc: np.ndarray, results_nhwc: np.ndarray) -> list[str]:
  """Writes each result as `stylized_<name>.png` and the content | style | result grid.

  Returns:
    The results' file names, in the order of `content_specs`.
  """
  files = _file_names(content_specs)
  for name, image in zip(files, results_nhwc):
    save_png(os.path.join(out_dir, name), make_grid(image[None], padding=0))
  rows = np.stack([contents_nhwc, np.broadcast_to(style_hwc, contents_nhwc.shape),
                   results_nhwc], 1)
  save_png(os.path.join(out_dir, GRID_FILE),
           make_grid(rows.reshape(-1, *rows.shape[2:]), num_cols=3))
  return files


def make_out_dir(out_dir: str) -> None:
  """Creates the output directory; `WorkdirError` (one line) if it cannot be."""
  try:
    os.makedirs(out_dir, exist_ok=True)
  except OSError as error:
    raise WorkdirError(f"Cannot create --out {out_dir} ({error.strerror}): pass a "
                       "writable directory.") from None


def _plot_curves(path: str, curves: dict[str, np.ndarray], labels: Sequence[str]) -> bool:
  """Writes the loss curves as a PNG; False (and a warning) without matplotlib."""
  try:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
  except ImportError:
    logging.warning("No %s: matplotlib is not installed (the curves are in %s).",
                    CURVES_FILE, RESULT_FILE)
    return False
  figure, axes = plt.subplots(1, len(gatys.TERMS), figsize=(4 * len(gatys.TERMS), 3.2))
  for axis, term in zip(axes, gatys.TERMS):
    for label, curve in zip(labels, curves[term]):
      axis.plot(np.arange(len(curve)), np.maximum(curve, 1e-12), label=label)
    axis.set_yscale("log")
    axis.set_title(term)
    axis.set_xlabel("step")
  axes[0].legend(fontsize="small")
  figure.tight_layout()
  tmp_path = path + ".tmp.png"
  figure.savefig(tmp_path, dpi=90)
  plt.close(figure)
  os.replace(tmp_path, path)
  return True


def config_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
  def plain(value):
    if isinstance(value, dict):
      return {key: plain(item) for key, item in value.items()}
    return list(value) if isinstance(value, tuple) else value
  return plain(config.to_dict())


def run_stylize(config: ml_collections.ConfigDict, *, content_specs: Sequence[str],
                style_spec: str, out_dir: str) -> dict[str, Any]:
  """Stylises the content images with the style image; writes `out_dir`'s files.

  Args:
    config: a configs/style_transfer.py config.
    content_specs: paths or `skimage:NAME`s of the content images.
    style_spec: path or `skimage:NAME` of the style image.
    out_dir: the output directory (created).

  Returns:
    The contents of `stylize.json`.

  Raises:
    ConfigError, ImageError, CheckpointError, WorkdirError: bad input, as one line,
      before anything is written.
  """
  out_dir = check_out_dir(out_dir)
  style_features.check_config(config)
  settings = gatys.settings_from_config(config)
  size = config.image_size
  contents = np.stack([style_images.load_image(spec, size) for spec in content_specs])
  style = style_images.load_image(style_spec, size)
  network = style_features.build_feature_network(config)
  make_out_dir(out_dir)

  result = gatys.stylize(network, settings, contents, style, seed=config.seed)
  files = write_images(out_dir, content_specs, contents, style, result.images)
  labels = [style_images.image_name(spec) for spec in content_specs]
  plotted = _plot_curves(os.path.join(out_dir, CURVES_FILE), result.curves, labels)

  num = len(content_specs)
  per_image = []
  for index, (spec, name) in enumerate(zip(content_specs, files)):
    curves = {term: [float(v) for v in result.curves[term][index]]
              for term in gatys.TERMS}
    per_image.append({"content": spec, "file": name,
                      "final": {term: curve[-1] for term, curve in curves.items()},
                      "initial": {term: curve[0] for term, curve in curves.items()},
                      "curves": curves})
  payload = {
      "style": style_spec, "network": config.features.network,
      "optimizer": settings.optimizer, "steps": settings.steps, "image_size": size,
      "num_images": num, "num_devices": len(jax.devices()),
      "platform": jax.devices()[0].platform,
      "compile_seconds": result.compile_seconds, "run_seconds": result.run_seconds,
      "seconds_per_image": result.run_seconds / num,
      "grid": GRID_FILE, "grid_columns": ["content", "style", "result"],
      "curves_plot": CURVES_FILE if plotted else None,
      "images": per_image, "config": config_dict(config)}
  write_json_atomic(os.path.join(out_dir, RESULT_FILE), payload)
  for item in per_image:
    logging.info("stylize %s x %s: content %.4g, style %.4g, tv %.4g, total %.4g",
                 item["content"], style_spec, *(item["final"][t] for t in gatys.TERMS))
  logging.info("stylize: %d image(s) of %dx%d in %.2f s (%.2f s per image; compiling "
               "%.2f s) on %d %s device(s)", num, size, size, result.run_seconds,
               payload["seconds_per_image"], result.compile_seconds,
               payload["num_devices"], payload["platform"])
  return payload
