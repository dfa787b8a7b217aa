"""Several seeds of one GAN config trained as one program: `jax.vmap` over the seeds.

A small model leaves a big accelerator mostly idle; stacking S seeds' states on a
leading axis and vmapping the data-parallel training step (`GanProgram.train_step`:
latents, D and G updates, non-finite tracking) over it trains them in one program,
with the batches of each seed's own input pipeline stacked the same way. Each seed
still gets its own work directory, exactly like a plain run's (config.json,
metrics.jsonl, sample grids, checkpoints of its own state and data position,
provenance.json): a plain `run.py` of that seed can continue it, and this trainer
resumes from those checkpoints when every seed is at the same step. The numbers
match one run per seed up to float rounding (vmapped convolutions sum in another
order), not bit for bit.

Command line (what `run.py sweep` runs for a sweep with `vmap_seeds=True`):

  python -m cnnjax.sweeps.vmap_seeds --config=configs/dcgan.py:tiny \
      [--config.FIELD=VALUE ...] --seed=0 --workdir=DIR/run0 --seed=1 --workdir=DIR/run1
"""

import contextlib
import copy
import json
import os
import sys
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from ml_collections import config_flags

from cnnjax.data.pipeline import make_train_dataset
from cnnjax.data.sources import dataset_image_shape, dataset_num_classes, get_data_source
from cnnjax.errors import CnnjaxError, ConfigError, NonFiniteError
from cnnjax.io.metrics_writer import MetricsWriter
from cnnjax.io.provenance import write_provenance
from cnnjax.io.workdir_lock import workdir_lock
from cnnjax.io.workdir import CONFIG_FILE, DATA_INFO_FILE, prepare_workdir, read_json, \
    write_json_atomic
from cnnjax.runs.scoring import make_training_evaluator
from cnnjax.train import parallel
from cnnjax.train.best_metric import check_best_metric, check_evaluated, step_metric_names
from cnnjax.train.checkpointing import Checkpointer
from cnnjax.train.distributed import DistributedError, DistributedSettings
from cnnjax.train.distributed import plan as distributed_plan
from cnnjax.train.divergence import DivergenceRecord, all_finite
from cnnjax.train.gan_program import GanProgram, build_gan_program
from cnnjax.train.loop import CONFIG_CHANGES_FILE, write_grids
from cnnjax.train.preemption import PreemptionSignal
from cnnjax.train.progress import Progress
from cnnjax.train.resume import check_resumable
from cnnjax.train.validation import validate_gan_config

_all_finite = jax.jit(all_finite)


def with_seed(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
  """A copy of `config` whose `seed` is `seed`."""
  config = copy.deepcopy(config)
  config.seed = seed
  return config


def stack_trees(trees: Sequence[Any]) -> Any:
  """Pytrees of equal structure -> one pytree with a leading axis over them."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def unstack_tree(tree: Any, index: int) -> Any:
  """The `index`-th slice of every leaf of a stacked pytree."""
  return jax.tree.map(lambda leaf: leaf[index], tree)


def seed_batch_sharding(mesh: Mesh) -> NamedSharding:
  """Stacked batches (S, B, ...): seeds whole on every device, batch split over the mesh."""
  return NamedSharding(mesh, P(None, parallel.DATA_AXIS))


def put_seed_batches(batches: Sequence[dict[str, np.ndarray]], mesh: Mesh
                     ) -> dict[str, jax.Array]:
  """Stacks the seeds' (process-local) batches into arrays (S, B, ...) over `mesh`."""
  sharding = seed_batch_sharding(mesh)
  return {name: jax.make_array_from_process_local_data(
      sharding, np.stack([batch[name] for batch in batches]))
          for name in batches[0]}


def make_vmapped_train_step(program: GanProgram, mesh: Mesh):
  """`step(states, batches) -> (states, metrics)` over stacked seeds (leading axis).

  The program's own data-parallel step (which draws each seed's latents from that
  seed's state and tracks its non-finite steps) is vmapped; the stacked state is
  replicated over `mesh` and donated.
  """
  return jax.jit(jax.vmap(parallel.unjitted(program.train_step)), donate_argnums=0,
                 out_shardings=(parallel.replicated(mesh), parallel.replicated(mesh)),
                 compiler_options=parallel.compiler_options(mesh))


def _record_run(workdir: str, config: ml_collections.ConfigDict, data_info: dict,
                argv: Sequence[str]) -> None:
  """Checks a relaunch against the run's config.json, then (re)writes its records."""
  config_dict = json.loads(config.to_json())
  config_path = os.path.join(workdir, CONFIG_FILE)
  changes = {}
  if os.path.exists(config_path):
    changes = check_resumable(read_json(config_path), config_dict, workdir)
  if jax.process_index() == 0:
    if changes:  # Harmless ones (more steps, logging), recorded as the runtime does.
      with open(os.path.join(workdir, CONFIG_CHANGES_FILE), "a") as file:
        file.write(json.dumps({path: {"previous": old, "current": new}
                               for path, (old, new) in changes.items()}) + "\n")
    write_json_atomic(config_path, config_dict)
    write_json_atomic(os.path.join(workdir, DATA_INFO_FILE), data_info)
    write_provenance(workdir, config, argv, written_by="vmap_seeds")


def _restore(checkpointers, programs, iterators) -> tuple[list[Any], int]:
  """Every seed's newest checkpoint (all at one step), or fresh states at step 0."""
  restored = [checkpointer.restore(jax.eval_shape(program.init_state), iterator)
              for checkpointer, program, iterator in zip(checkpointers, programs,
                                                         iterators)]
  if all(item is None for item in restored):
    return [program.init_state() for program in programs], 0
  steps = [None if item is None else item[1] for item in restored]
  if len(set(steps)) > 1:
    raise ConfigError(f"The seeds' checkpoints are at different steps ({steps}); "
                      "vectorised seeds resume together, so continue them as separate "
                      "runs (vmap_seeds=False).")
  return [item[0] for item in restored], steps[0]


def _guard_finite(states, seeds, workdirs, metric_names, check_parameters) -> None:
  """Raises `NonFiniteError` naming the first seed whose run diverged."""
  divergence = jax.device_get(states.divergence)
  for index, seed in enumerate(seeds):
    record = DivergenceRecord(*(np.asarray(field)[index] for field in (
        divergence.count, divergence.first_step, divergence.first_mask)))
    if record.first_step >= 0:
      raise NonFiniteError(
          f"Seed {seed} ({workdirs[index]}) diverged: {record.describe(metric_names)}; "
          "its last good checkpoint is kept. Lower the learning rates, change the "
          "loss, or set train.on_nonfinite=skip.")
    if check_parameters and not jax.device_get(_all_finite(unstack_tree(states, index))):
      raise NonFiniteError(f"Seed {seed} ({workdirs[index]}) diverged: a parameter is "
                           "not finite; its last good checkpoint is kept.")


def train_seeds(config: ml_collections.ConfigDict, seeds: Sequence[int],
                workdirs: Sequence[str], *, devices: list[jax.Device] | None = None,
                argv: Sequence[str] | None = None) -> list[dict[str, float]]:
  """Trains (or resumes) the GAN `config` for every seed at once, seed i into workdirs[i].

  Args:
    config: the experiment config (its own `seed` is replaced by each of `seeds`).
    seeds: the seeds.
    workdirs: one work directory per seed.
    devices: the data-parallel devices (default: all).
    argv: the command line recorded in each run's provenance (default: sys.argv).

  Returns:
    The metrics of each seed's last logged step.
  """
  if not seeds or len(seeds) != len(workdirs):
    raise ConfigError(f"Give one --workdir per --seed (got {len(seeds)} seeds and "
                      f"{len(workdirs)} workdirs).")
  if len(set(seeds)) != len(seeds) or len(set(map(os.path.abspath, workdirs))) != len(seeds):
    raise ConfigError(f"Seeds and workdirs must be distinct, got {list(seeds)} and "
                      f"{list(workdirs)}.")
  if config.get("experiment", "gan") != "gan":
    raise ConfigError(f"Vectorised seeds train GAN experiments only, not "
                      f"{config.get('experiment')!r}; run one process per seed.")
  configs = [with_seed(config, seed) for seed in seeds]
  with PreemptionSignal() as preemption, contextlib.ExitStack() as held:
    return _train(configs, list(seeds), list(workdirs), preemption, devices,
                  list(sys.argv if argv is None else argv), held)


def _train(configs, seeds, workdirs, preemption, devices, argv,
           held: contextlib.ExitStack) -> list[dict[str, float]]:
  config = configs[0]
  mesh = parallel.make_data_mesh(devices)
  if jax.default_backend() == "cpu":
    logging.warning("Vectorised seeds run slower than one run per seed on CPU (vmapped "
                    "convolutions become grouped ones); they pay off on accelerators "
                    "(experiments/benchmarks/vmap_seeds_bench.py).")
  for seed_config in configs:
    validate_gan_config(seed_config, mesh.size)
  source, info = get_data_source(config.data.name, config.data.split,
                                 config.data.data_dir or None)
  height, width, channels = dataset_image_shape(info)
  if config.data.resize == "pad" and max(height, width) > config.data.image_size:
    raise ConfigError(f"{config.data.name} images are {height}x{width}, larger than "
                      f"data.image_size={config.data.image_size}; set data.resize='resize' "
                      "or a larger data.image_size.")
  num_classes = dataset_num_classes(info)
  evaluators = [make_training_evaluator(seed_config) for seed_config in configs]
  eval_every = config.eval.every if evaluators[0] is not None else 0
  # Built before the workdirs are touched: what the programs reject writes nothing.
  programs = [build_gan_program(seed_config, mesh=mesh, channels=channels,
                                num_classes=num_classes) for seed_config in configs]

  def batches(seed_config):
    return iter(make_train_dataset(
        source, seed=seed_config.seed, global_batch_size=config.train.batch_size,
        image_size=config.data.image_size, resize=config.data.resize,
        has_label=num_classes is not None, process_index=jax.process_index(),
        process_count=jax.process_count(), num_threads=config.data.num_threads,
        prefetch=config.data.prefetch, cache_in_memory=config.data.cache_in_memory))

  step_names = None
  if config.checkpoint.best_metric:   # Traced on a throwaway iterator's first batch.
    step_names = step_metric_names(programs[0], next(batches(configs[0])))
    check_best_metric(config, step_names, evaluates=bool(eval_every))
  is_writer = jax.process_index() == 0
  workdirs = [prepare_workdir(workdir) for workdir in workdirs]
  for workdir in workdirs:   # One writer per workdir, held until training ends.
    held.enter_context(workdir_lock(workdir, enabled=is_writer))
  data_info = {"name": config.data.name, "split": config.data.split,
               "image_shape": [height, width, channels], "num_classes": num_classes}
  for workdir, seed_config in zip(workdirs, configs):
    _record_run(workdir, seed_config, data_info, argv)

  iterators = [batches(seed_config) for seed_config in configs]
  checkpointers = [Checkpointer(workdir, config.checkpoint) for workdir in workdirs]
  writers: list[MetricsWriter] = []
  logged: list[dict[str, float]] = [{} for _ in seeds]
  try:
    states, start_step = _restore(checkpointers, programs, iterators)
    if start_step:
      logging.info("Resumed %d seeds from their checkpoints at step %d.", len(seeds),
                   start_step)
    states = parallel.put_replicated(stack_trees(states), mesh)
    train_step = make_vmapped_train_step(programs[0], mesh)
    writers = [MetricsWriter(workdir, enabled=is_writer, resume_step=start_step)
               for workdir in workdirs]
    num_steps = config.train.num_steps
    progress = Progress(start_step=start_step, num_steps=num_steps)
    metric_names: list[str] = []
    eval_names: set[str] = set()
    logging.info("Training seeds %s of one GAN as one vmapped program on %s, steps %d "
                 "to %d, over %d devices.", seeds, config.data.name, start_step,
                 num_steps, mesh.size)
    stop_on_nonfinite = config.train.on_nonfinite == "stop"
    for step in range(start_step + 1, num_steps + 1):
      batches = put_seed_batches([next(iterator) for iterator in iterators], mesh)
      states, metrics = train_step(states, batches)
      metric_names = list(metrics)
      is_last = step == num_steps
      is_log_step = step % config.train.log_every == 0 or is_last
      stop = preemption.agreed(is_sync_point=is_log_step)
      evaluated: list[dict[str, float]] = [{} for _ in seeds]
      if eval_every and (step % eval_every == 0 or is_last):
        if stop_on_nonfinite:
          _guard_finite(states, seeds, workdirs, metric_names, check_parameters=False)
        for index, evaluate in enumerate(evaluators):
          evaluated[index] = evaluate(programs[index], unstack_tree(states, index))
          if step_names is not None and not eval_names:
            check_evaluated(config, step_names, evaluated[index])
          eval_names.update(evaluated[index])
      if is_log_step:
        if stop_on_nonfinite:
          _guard_finite(states, seeds, workdirs, metric_names, check_parameters=False)
        fetched = jax.device_get(metrics)
        counts = np.asarray(jax.device_get(states.divergence.count))
        timing = progress.update(step)
        for index, seed in enumerate(seeds):
          logged[index] = {name: float(np.asarray(value)[index])
                           for name, value in fetched.items()}
          logged[index]["nonfinite_steps"] = float(counts[index])
          logged[index].update(timing)
          logged[index].update(evaluated[index])
          writers[index].write_scalars(step, logged[index])
          logging.info("seed %d: %s", seed, progress.describe(step, logged[index]))
      else:
        for index, values in enumerate(evaluated):
          if values:
            writers[index].write_scalars(step, values)
      if step % config.train.sample_every == 0 or is_last:
        for index, program in enumerate(programs):   # Computed by all, written by one.
          grids = jax.device_get(program.grids(unstack_tree(states, index)))
          if is_writer:
            write_grids(workdirs[index], step, grids, writers[index])
      if step % config.checkpoint.every == 0 or is_last or stop:
        if stop_on_nonfinite:
          _guard_finite(states, seeds, workdirs, metric_names, check_parameters=True)
        for index, checkpointer in enumerate(checkpointers):
          losses = {k: v for k, v in logged[index].items() if k not in eval_names}
          checkpointer.save(step, unstack_tree(states, index), iterators[index],
                            metrics={**losses, **evaluated[index]})
      if stop:
        logging.info("Stopped at step %d; rerun the same command to resume.", step)
        break
  finally:
    for checkpointer in checkpointers:
      checkpointer.wait()
      checkpointer.close()
    for writer in writers:
      writer.close()
  return logged


def define_flags() -> None:
  """The command's flags (defined only when run, so importing defines none)."""
  config_flags.DEFINE_config_file(
      "config", None, "Experiment config file (a GAN), optionally with a variant; "
      "fields are overridden with --config.SECTION.FIELD=VALUE.", lock_config=True)
  flags.DEFINE_multi_integer("seed", [], "A seed; repeat once per seed.")
  flags.DEFINE_multi_string("workdir", [], "The work directory of the preceding --seed.")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    _fail(f"Unexpected arguments {' '.join(argv[1:])!r}.")
  config = flags.FLAGS.config
  if config is None:
    _fail("--config is required, e.g. --config=configs/dcgan.py.")
  try:
    if distributed_plan(DistributedSettings(), os.environ) is not None:
      _fail("vmap_seeds trains every seed in one process, but the environment (JAX_* "
            "variables, a SLURM step of several tasks, a TPU pod slice) asks for several: "
            "start it once, or sweep with vmap_seeds=False.")
  except DistributedError as error:
    _fail(str(error))
  try:
    train_seeds(config, flags.FLAGS.seed, flags.FLAGS.workdir,
                argv=["-m", "cnnjax.sweeps.vmap_seeds", *sys.argv[1:]])
  except CnnjaxError as error:
    logging.flush()
    _fail(str(error))


def _fail(message: str) -> None:
  sys.stderr.write("error: " + " ".join(message.split()) + "\n")
  sys.exit(2)


if __name__ == "__main__":
  define_flags()
  app.run(main)
