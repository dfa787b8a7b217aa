"""The `gan_encoder` kind: an encoder E trained to invert the frozen generator of a GAN
run on the generator's own samples (`configs/gan_encoder.py`,
`cnnjax.train.gan_encoder_program`).

The GAN run (`encoder.generator_workdir`, at `encoder.generator_step` or its newest
checkpoint) is read, never written; the step used is recorded in `data_info.json` and in
the state. Once training completes, `DIR/eval.json` holds the encoder's scores on fresh
latents (latent MSE, PSNR / SSIM of G(E(G(z))) against G(z)) and on held-out real images
of the GAN's dataset (PSNR / SSIM of G(E(x)) against x). A class-conditional GAN is
inverted with each image's class: E(x, y), G(E(x, y), y). `run.py invert
--inversion=encoder|hybrid` uses it (`open_encoder`).
"""

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from cnnjax.data.pipeline import scale_to_unit_range
from cnnjax.data.sources import get_data_source
from cnnjax.data.splits import load_split
from cnnjax.errors import CheckpointError, ConfigError
from cnnjax.io.workdir import EVAL_FILE, write_json_atomic
from cnnjax.metrics.paired import paired_scores
from cnnjax.models import is_conditional_generator
from cnnjax.runs import gan
from cnnjax.runs.kind import ExperimentKind
from cnnjax.runs.restore import OpenRun, RunSpec, open_as, spec_as
from cnnjax.train import parallel
from cnnjax.train.checkpointing import Checkpointer
from cnnjax.train.gan_encoder_program import (GanEncoderProgram, build_gan_encoder_program,
                                              validate_gan_encoder_config)
from cnnjax.train.loop import TrainData

TRAIN_HINT = ("python run.py --config=configs/gan_encoder.py "
              "--config.encoder.generator_workdir=GAN_RUN --workdir=DIR")
HELD_OUT_STREAM = 7   # The seed's stream of the fresh latents `eval.json` scores.


def generator_spec(workdir: str) -> RunSpec:
  """The GAN run an encoder inverts (unconditional or class-conditional).

  Raises:
    WorkdirError: no run there. ConfigError: not a GAN run.
  """
  return spec_as(workdir, gan.KIND, hint="the encoder inverts a GAN's generator: pass "
                 "--config.encoder.generator_workdir=GAN_RUN")


def generator_classes(spec: RunSpec) -> int:
  """The classes of a GAN run's generator labels; 0 if it is unconditional."""
  if not is_conditional_generator(spec.config.model):
    return 0
  return int(spec.data_info["num_classes"])


def generator_weights(run: OpenRun) -> dict[str, Any]:
  """The variables a GAN run samples with (its EMA weights when it keeps them)."""
  state = run.state
  params = state.generator_ema if run.program.uses_ema else state.generator.params
  return {"params": params, "batch_stats": state.generator.batch_stats}


def _open_data(config: ml_collections.ConfigDict) -> TrainData:
  spec = generator_spec(config.encoder.generator_workdir)
  checkpointer = Checkpointer(spec.workdir, spec.config.checkpoint, read_only=True)
  try:
    steps = checkpointer.all_steps()
  finally:
    checkpointer.close()
  step = config.encoder.generator_step
  if step == -1:
    if not steps:
      raise CheckpointError(f"The GAN run {spec.workdir} has no checkpoint yet; train "
                            "it first.")
    step = steps[-1]
  elif step not in steps:
    raise CheckpointError(f"The GAN run {spec.workdir} has no checkpoint at step {step} "
                          f"(encoder.generator_step); available: {steps or 'none'}.")
  data = spec.config.data
  get_data_source(data.name, config.eval.split, data.data_dir or None)  # eval.split exists.
  return TrainData(source=None, info={
      "name": f"samples of {spec.workdir}", "split": None,
      "image_shape": list(spec.data_info["image_shape"]), "num_classes": None,
      "generator_workdir": spec.workdir, "generator_step": int(step),
      "generator_dataset": spec.config.data.name,
      "generator_classes": generator_classes(spec),
      "latent_dim": int(spec.config.model.latent_dim)})


def _no_batches(config, data, *, process_index: int, process_count: int):
  del config, data, process_index, process_count
  return None   # Each step draws its latents; G makes the images.


def _build_program(config: ml_collections.ConfigDict, *, mesh, data_info: dict
                   ) -> GanEncoderProgram:
  run = open_as(data_info["generator_workdir"], gan.KIND, data_info["generator_step"],
                mesh=mesh)
  generator = run.program.generator

  def generate(variables, latents_bz, labels_b=None):
    labels = () if labels_b is None else (labels_b,)
    return generator.apply(variables, latents_bz, *labels, train=False)

  return build_gan_encoder_program(
      config, mesh=mesh, generate=generate, generator_variables=generator_weights(run),
      generator_step=run.step, latent_dim=run.program.latent_dim,
      image_shape=tuple(data_info["image_shape"]),
      num_classes=data_info.get("generator_classes", 0))


def held_out_images(data_info: dict, eval_config: ml_collections.ConfigDict,
                    num: int) -> tuple[np.ndarray, np.ndarray | None]:
  """The first `num` images (N, H, W, C) in [-1, 1] of the GAN dataset's `eval.split`,
  and their labels (N,) when the generator is class-conditional (else None).

  Raises:
    DatasetError: the split is unavailable. ConfigError: it has fewer images.
  """
  spec = spec_as(data_info["generator_workdir"], gan.KIND)
  data = spec.config.data
  images, labels = load_split(data.name, eval_config.split, data.data_dir,
                              data.image_size, data.resize)
  if len(images) < num:
    raise ConfigError(f"The {eval_config.split} split of {data.name} has {len(images)} "
                      f"images, fewer than eval.num_images={num}.")
  labels = (np.asarray(labels[:num], np.int32)
            if data_info.get("generator_classes", 0) else None)
  return scale_to_unit_range(images[:num]), labels


def batched(function, replicated: Any, array: np.ndarray,
            labels: np.ndarray | None = None, *, mesh, batch_size: int) -> np.ndarray:
  """`function(replicated, batch, labels batch or None)` over `array` (and `labels`) in
  batches of `batch_size` (padded at the end), each sharded over `mesh`; one compiled
  program for every batch."""
  sharding = parallel.data_sharded(mesh)
  apply = jax.jit(function, out_shardings=sharding)

  def padded_batch(values, start):
    chunk = np.asarray(values[start:start + batch_size])
    return jax.device_put(np.pad(chunk, ((0, batch_size - len(chunk)),) +
                                 ((0, 0),) * (chunk.ndim - 1)), sharding)
  outputs = []
  for start in range(0, len(array), batch_size):
    label_batch = None if labels is None else padded_batch(labels, start)
    result = apply(replicated, padded_batch(array, start), label_batch)
    outputs.append(np.asarray(jax.device_get(result))[:len(array[start:start + batch_size])])
  return np.concatenate(outputs)


def score_encoder(program: GanEncoderProgram, state, config: ml_collections.ConfigDict,
                  real_images_nhwc: np.ndarray, real_labels_n: np.ndarray | None = None
                  ) -> dict[str, float]:
  """The encoder's held-out scores: on `eval.num_images` fresh latents (with uniformly
  drawn classes for a conditional G) and on the given real images (with their labels
  when conditional); PSNR in dB and SSIM by dm-pix, on [0, 1]."""
  num, batch_size = config.eval.num_images, config.eval.batch_size
  key = jax.random.fold_in(jax.random.key(config.seed), HELD_OUT_STREAM)
  latent_key, label_key = jax.random.split(key)
  latents = np.asarray(jax.random.normal(latent_key, (num, program.latent_dim)))
  labels = (np.asarray(jax.random.randint(label_key, (num,), 0, program.num_classes,
                                          jnp.int32)) if program.num_classes else None)
  weights = (state.params, state.generator)
  run = functools.partial(batched, mesh=program.mesh, batch_size=batch_size)
  generate = lambda w, z, y: program.generate(w[1], z, y)
  encode = lambda w, x, y: program.encode(w[0], x, y)
  samples = run(generate, weights, latents, labels)
  encoded = run(encode, weights, samples, labels)
  reconstructed = run(generate, weights, encoded, labels)
  real_latents = run(encode, weights, real_images_nhwc, real_labels_n)
  real_reconstructed = run(generate, weights, real_latents, real_labels_n)
  fake = paired_scores(reconstructed, samples)
  real = paired_scores(real_reconstructed, real_images_nhwc)
  return {"latent_mse": float(np.mean((encoded - latents) ** 2)),
          "samples_psnr": fake["psnr"], "samples_ssim": fake["ssim"],
          "real_psnr": real["psnr"], "real_ssim": real["ssim"], "real_l1": real["l1"]}


def open_encoder(workdir: str, step: int | None = None, *, mesh=None) -> OpenRun:
  """Restores a `gan_encoder` run read-only (its program holds the frozen generator).

  Raises:
    WorkdirError: no run there. ConfigError: a run of another kind.
    CheckpointError: no readable checkpoint (at `step`).
  """
  return open_as(workdir, KIND, step, hint=f"train an encoder with `{TRAIN_HINT}`",
                 mesh=mesh)


def _score_after_training(config: ml_collections.ConfigDict, workdir: str,
                          logged: dict[str, float]) -> dict[str, float]:
  """Once training is complete, writes the held-out scores to `workdir/eval.json`."""
  run = open_encoder(workdir)
  if run.step < config.train.num_steps:   # Preempted: scored when it completes.
    return logged
  real, real_labels = held_out_images(run.data_info, config.eval, config.eval.num_images)
  scores = {f"test_{name}": value for name, value in
            score_encoder(run.program, run.state, config, real, real_labels).items()}
  logging.info("Encoder at step %d: %s", run.step,
               ", ".join(f"{name} {value:.4g}" for name, value in scores.items()))
  if jax.process_index() == 0:
    write_json_atomic(os.path.join(run.workdir, EVAL_FILE), {
        "step": run.step, "metrics": scores,
        "settings": {"generator_workdir": run.data_info["generator_workdir"],
                     "generator_step": run.data_info["generator_step"],
                     "split": config.eval.split, "num_images": config.eval.num_images}})
  return {**logged, **scores}


KIND = ExperimentKind(
    name="gan_encoder",
    summary="an encoder inverting a GAN run's generator; its scores are in its eval.json",
    config_hint=TRAIN_HINT,
    validate=validate_gan_encoder_config,
    build_program=_build_program,
    open_data=_open_data,
    make_batches=_no_batches,
    after_training=_score_after_training,
)
