"""The `gan_encoder` kind: an encoder E trained to invert the frozen generator of a GAN
run on the generator's own samples (`configs/gan_encoder.py`,
`cnnjax.train.gan_encoder_program`).

The GAN run (`encoder.generator_workdir`, at `encoder.generator_step` or its newest
checkpoint) is read, never written; the step used is recorded in `data_info.json` and in
the state. Once training completes, `DIR/eval.json` holds the encoder's scores on fresh
latents (latent MSE, PSNR / SSIM of G(E(G(z))) against G(z)) and on held-out real images
of the GAN's dataset (PSNR / SSIM of G(E(x)) against x). `run.py invert
--inversion=encoder|hybrid` uses it (`open_encoder`).
"""

import os
from typing import Any

import jax
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
  """The GAN run an encoder inverts (unconditional generators only).

  Raises:
    WorkdirError: no run there. ConfigError: not an unconditional GAN run.
  """
  spec = spec_as(workdir, gan.KIND, hint="the encoder inverts a GAN's generator: pass "
                 "--config.encoder.generator_workdir=GAN_RUN")
  if is_conditional_generator(spec.config.model):
    raise ConfigError(f"{spec.workdir} holds a class-conditional GAN; the encoder "
                      "inverts unconditional generators (configs/dcgan.py, sngan.py): "
                      "invert a conditional one with --inversion=optimize.")
  return spec


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
      "latent_dim": int(spec.config.model.latent_dim)})


def _no_batches(config, data, *, process_index: int, process_count: int):
  del config, data, process_index, process_count
  return None   # Each step draws its latents; G makes the images.


def _build_program(config: ml_collections.ConfigDict, *, mesh, data_info: dict
                   ) -> GanEncoderProgram:
  run = open_as(data_info["generator_workdir"], gan.KIND, data_info["generator_step"],
                mesh=mesh)
  generator = run.program.generator

  def generate(variables, latents_bz):
    return generator.apply(variables, latents_bz, train=False)

  return build_gan_encoder_program(
      config, mesh=mesh, generate=generate, generator_variables=generator_weights(run),
      generator_step=run.step, latent_dim=run.program.latent_dim,
      image_shape=tuple(data_info["image_shape"]))


def held_out_images(data_info: dict, eval_config: ml_collections.ConfigDict,
                    num: int) -> np.ndarray:
  """The first `num` images (N, H, W, C) in [-1, 1] of the GAN dataset's `eval.split`.

  Raises:
    DatasetError: the split is unavailable. ConfigError: it has fewer images.
  """
  spec = spec_as(data_info["generator_workdir"], gan.KIND)
  data = spec.config.data
  images, _ = load_split(data.name, eval_config.split, data.data_dir, data.image_size,
                         data.resize)
  if len(images) < num:
    raise ConfigError(f"The {eval_config.split} split of {data.name} has {len(images)} "
                      f"images, fewer than eval.num_images={num}.")
  return scale_to_unit_range(images[:num])


def batched(function, replicated: Any, array: np.ndarray, *, mesh, batch_size: int
            ) -> np.ndarray:
  """`function(replicated, batch)` over `array` in batches of `batch_size` (padded at
  the end), each sharded over `mesh`; one compiled program for every batch."""
  sharding = parallel.data_sharded(mesh)
  apply = jax.jit(function, out_shardings=sharding)
  outputs = []
  for start in range(0, len(array), batch_size):
    chunk = np.asarray(array[start:start + batch_size])
    padded = np.pad(chunk, ((0, batch_size - len(chunk)),) + ((0, 0),) * (chunk.ndim - 1))
    outputs.append(np.asarray(jax.device_get(apply(replicated,
                                                   jax.device_put(padded, sharding))))
                   [:len(chunk)])
  return np.concatenate(outputs)


def score_encoder(program: GanEncoderProgram, state, config: ml_collections.ConfigDict,
                  real_images_nhwc: np.ndarray) -> dict[str, float]:
  """The encoder's held-out scores: on `eval.num_images` fresh latents and on the
  given real images (PSNR in dB and SSIM by dm-pix, on [0, 1])."""
  num, batch_size = config.eval.num_images, config.eval.batch_size
  key = jax.random.fold_in(jax.random.key(config.seed), HELD_OUT_STREAM)
  latents = np.asarray(jax.random.normal(key, (num, program.latent_dim)))
  weights = (state.params, state.generator)
  samples = batched(lambda w, z: program.generate(w[1], z), weights, latents,
                    mesh=program.mesh, batch_size=batch_size)
  encoded = batched(lambda w, x: program.encode(w[0], x), weights, samples,
                    mesh=program.mesh, batch_size=batch_size)
  reconstructed = batched(lambda w, z: program.generate(w[1], z), weights, encoded,
                          mesh=program.mesh, batch_size=batch_size)
  real_latents = batched(lambda w, x: program.encode(w[0], x), weights, real_images_nhwc,
                         mesh=program.mesh, batch_size=batch_size)
  real_reconstructed = batched(lambda w, z: program.generate(w[1], z), weights,
                               real_latents, mesh=program.mesh, batch_size=batch_size)
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
  real = held_out_images(run.data_info, config.eval, config.eval.num_images)
  scores = {f"test_{name}": value for name, value in
            score_encoder(run.program, run.state, config, real).items()}
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
