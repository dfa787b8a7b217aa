"""`train_and_evaluate` for GANs: data, models, the parallel step and the logging loop."""

import json
import os

import jax
import ml_collections
import numpy as np
from absl import logging

from cnnjax.data.pipeline import make_train_dataset
from cnnjax.data.sources import dataset_image_shape, dataset_num_classes, get_data_source
from cnnjax.errors import ConfigError
from cnnjax.io.images import make_grid, save_png
from cnnjax.io.metrics_writer import MetricsWriter, check_finite
from cnnjax.io.workdir import CONFIG_FILE, prepare_workdir, write_json_atomic
from cnnjax.train import parallel
from cnnjax.train.gan_program import build_gan_program, fixed_sample_latents
from cnnjax.train.progress import Progress
from cnnjax.train.validation import validate_gan_config


def _samples_dir(workdir: str) -> str:
  path = os.path.join(workdir, "samples")
  os.makedirs(path, exist_ok=True)
  return path


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains the GAN described by `config`, writing everything into `workdir`.

  Every input is checked before anything is written.

  Returns:
    The metrics of the last logged step.
  """
  mesh = parallel.make_data_mesh()
  validate_gan_config(config, num_devices=mesh.size)
  source, info = get_data_source(config.data.name, config.data.split,
                                 config.data.data_dir or None)
  height, width, channels = dataset_image_shape(info)
  if config.data.resize == "pad" and max(height, width) > config.data.image_size:
    raise ConfigError(
        f"{config.data.name} images are {height}x{width}, larger than "
        f"data.image_size={config.data.image_size}; set data.resize='resize' or a "
        "larger data.image_size.")
  is_writer = jax.process_index() == 0
  workdir = prepare_workdir(workdir)
  if is_writer:
    write_json_atomic(os.path.join(workdir, CONFIG_FILE), json.loads(config.to_json()))

  program = build_gan_program(config, mesh=mesh, channels=channels)
  state = program.init_state()
  dataset = make_train_dataset(
      source, seed=config.seed, global_batch_size=config.train.batch_size,
      image_size=config.data.image_size, resize=config.data.resize,
      has_label=dataset_num_classes(info) is not None,
      process_index=jax.process_index(), process_count=jax.process_count(),
      num_threads=config.data.num_threads, prefetch=config.data.prefetch,
      cache_in_memory=config.data.cache_in_memory)
  batches = iter(dataset)

  sample_latents = parallel.put_replicated(
      fixed_sample_latents(config.seed, config.train.num_samples,
                           config.model.latent_dim), mesh)
  writer = MetricsWriter(workdir, enabled=is_writer)
  num_steps = config.train.num_steps
  start_step = int(state.step)
  progress = Progress(start_step=start_step, num_steps=num_steps)
  last_metrics: dict[str, float] = {}
  logging.info("Training %s on %s for %d steps over %d devices into %s.",
               config.model.name, config.data.name, num_steps, mesh.size, workdir)
  try:
    for step in range(start_step + 1, num_steps + 1):
      batch = parallel.put_global_batch(next(batches), mesh)
      state, metrics = program.train_step(state, batch)
      is_last = step == num_steps
      if step % config.train.log_every == 0 or is_last:
        last_metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        check_finite(step, last_metrics)
        last_metrics.update(progress.update(step))
        writer.write_scalars(step, last_metrics)
        logging.info("%s", progress.describe(step, last_metrics))
      if (step % config.train.sample_every == 0 or is_last) and is_writer:
        grid = make_grid(np.asarray(jax.device_get(
            program.sample(state.generator, sample_latents))))
        save_png(os.path.join(_samples_dir(workdir), f"grid_{step:06d}.png"), grid)
        writer.write_image(step, "samples", grid)
  finally:
    writer.close()
  return last_metrics
