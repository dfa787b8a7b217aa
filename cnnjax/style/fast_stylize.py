"""`run.py stylize --workdir=FAST_RUN`: a trained fast-style network (Johnson et al.)
applied to content images in one forward pass.

Into the output directory, as the optimisation does (`cnnjax.style.stylize_run`):
  stylized_<name>.png   each content image's result;
  grid.png              one row per content image: content | style | result;
  stylize.json          per image the content, style, tv and total losses of the result
                        (the run's perceptual loss, on the run's feature network), the
                        seconds of compilation and the seconds per image of the forward
                        pass (the mean of `repeats` timed passes after a warm-up one).

The images are resized (shorter side, then centre-cropped) to `size`, by default the
run's training `data.image_size`; the network is fully convolutional, so any size of at
least `MIN_SIZE` works. Bad input raises a one-line `CnnjaxError` before anything is
written.
"""

import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from absl import logging

from cnnjax.data.photos import load_image
from cnnjax.errors import ConfigError
from cnnjax.io.workdir import write_json_atomic
from cnnjax.losses.style import TERMS
from cnnjax.models.style_transformer import MIN_SIZE
from cnnjax.runs import fast_style
from cnnjax.runs.restore import open_as
from cnnjax.style.stylize_run import (GRID_FILE, RESULT_FILE, check_out_dir, config_dict,
                                      make_out_dir, write_images)

DEFAULT_REPEATS = 3


def run_fast_stylize(workdir: str, *, content_specs: Sequence[str], out_dir: str,
                     size: int | None = None, step: int | None = None,
                     repeats: int = DEFAULT_REPEATS) -> dict[str, Any]:
  """Stylises the content images with the fast-style run in `workdir`.

  Args:
    workdir: a `fast_style` run (`configs/fast_style.py`).
    content_specs: paths or `skimage:NAME`s of the content images.
    out_dir: the output directory (created).
    size: the images' height and width (default: the run's `data.image_size`).
    step: the checkpoint to apply (default: the newest).
    repeats: timed forward passes (after one warm-up pass that compiles).

  Returns:
    The contents of `stylize.json`.

  Raises:
    ConfigError, WorkdirError, CheckpointError, ImageError: bad input, as one line,
      before anything is written.
  """
  out_dir = check_out_dir(out_dir)
  if size is not None and size < MIN_SIZE:
    raise ConfigError(f"--size={size} is too small for the style network: use at least "
                      f"{MIN_SIZE}.")
  run = open_as(workdir, fast_style.KIND, step)
  config, program = run.config, run.program
  size = size or config.data.image_size
  contents = np.stack([load_image(spec, size) for spec in content_specs])
  style = load_image(config.style_image, size)   # For the grid only.
  make_out_dir(out_dir)

  params = program.params_on_device(run.state)
  inputs = jax.device_put(contents, program.single_device)
  start = time.perf_counter()
  outputs = jax.block_until_ready(program.apply(params, inputs))
  compile_seconds = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(repeats):
    outputs = jax.block_until_ready(program.apply(params, inputs))
  run_seconds = (time.perf_counter() - start) / repeats
  outputs = np.asarray(outputs)
  terms = program.loss_terms(outputs, contents)

  files = write_images(out_dir, content_specs, contents, style, outputs)
  per_image = [{"content": spec, "file": name,
                "final": {term: float(terms[term][index]) for term in TERMS}}
               for index, (spec, name) in enumerate(zip(content_specs, files))]
  num = len(content_specs)
  payload = {
      "method": "feed_forward", "workdir": run.workdir, "step": run.step,
      "style": config.style_image, "network": config.features.network,
      "image_size": size, "num_images": num, "num_devices": 1,
      "platform": program.single_device.platform, "compile_seconds": compile_seconds,
      "run_seconds": run_seconds, "seconds_per_image": run_seconds / num,
      "repeats": repeats, "grid": GRID_FILE,
      "grid_columns": ["content", "style", "result"], "images": per_image,
      "config": config_dict(config)}
  write_json_atomic(os.path.join(out_dir, RESULT_FILE), payload)
  for item in per_image:
    logging.info("stylize %s with %s@%d: content %.4g, style %.4g, tv %.4g, total %.4g",
                 item["content"], run.workdir, run.step,
                 *(item["final"][term] for term in TERMS))
  logging.info("stylize: %d image(s) of %dx%d in %.4f s per image (one forward pass; "
               "compiling %.2f s) on %s", num, size, size, payload["seconds_per_image"],
               compile_seconds, payload["platform"])
  return payload
