"""Flags shared by several commands, and the one-line error every command ends with.

Only absl and ml_collections are imported here (and in every command module's top
level), so that bad flags are reported before JAX is imported.
"""

import sys

from absl import flags
from ml_collections import config_flags

CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, optionally with a variant: "
    "configs/dcgan.py:tiny. Fields are overridden with --config.SECTION.FIELD=VALUE.",
    lock_config=True)
WORKDIR = flags.DEFINE_string("workdir", None, "Work directory of the run (created if "
                              "missing when training).")
SEED = flags.DEFINE_integer("seed", 0, "Seed of what a command draws (samples, latents, "
                            "shuffles).")
STEP = flags.DEFINE_integer("step", None, "Checkpoint step of the run to read (default: "
                            "the newest).")
OUT = flags.DEFINE_string("out", None, "The file a command writes.")
SPLIT = flags.DEFINE_string("split", None, "The dataset split a command reads "
                            "(likelihood: default test; translate).")
IMAGES = flags.DEFINE_list("images", None, "Comma-separated PNG/JPEG files a command "
                           "reads instead of a dataset split (editing, inversion).")
OUT_DIR = flags.DEFINE_string("out_dir", None, "The directory a command writes its PNG "
                              "grids and JSON into (created; never the run's own files).")
EXTRACTOR_WORKDIR = flags.DEFINE_string(
    "extractor_workdir", None, "A classifier run (configs/classifier.py) whose features "
    "score or guide a command (evaluate: default the run's eval.extractor_workdir).")

# Multi-process runs (`cnnjax.train.distributed`): every process runs the same command.
DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", ["auto", "on", "off"], "auto: initialise jax.distributed "
    "when the flags below, JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID, a "
    "multi-task SLURM step or a multi-host Cloud TPU say so; on: always (JAX's cluster "
    "detection); off: one process.")
COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0's coordinator (multi-process).")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes of the run.")
PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's rank, 0 to "
                                  "num_processes - 1.")
DISTRIBUTED_TIMEOUT = flags.DEFINE_integer(
    "distributed_timeout", 300, "Seconds to wait for every process to connect.")
HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
    "heartbeat_timeout", 100, "Seconds after which a silent process counts as dead and "
    "the others stop.")

# Launching on SLURM (`run.py --launcher=slurm`, `run.py sweep --launcher=slurm`).
LAUNCHER = flags.DEFINE_enum("launcher", "local", ["local", "slurm"], "train, sweep: run "
                             "here, or write a SLURM batch job that runs it (srun, one "
                             "process per task).")
NODES = flags.DEFINE_integer("nodes", 1, "--launcher=slurm: machines of each run.")
TASKS_PER_NODE = flags.DEFINE_integer("tasks_per_node", 1, "--launcher=slurm: processes "
                                      "per machine (1, or 1 per GPU).")
GPUS_PER_TASK = flags.DEFINE_integer("gpus_per_task", None, "--launcher=slurm: GPUs of "
                                     "each process (0: request none, e.g. on TPU or CPU; "
                                     "sweep default: --devices_per_run as --gres).")
SLURM_OPTIONS = flags.DEFINE_multi_string("slurm", [], "--launcher=slurm: an #SBATCH "
                                          "option as KEY=VALUE (repeat), e.g. "
                                          "--slurm=partition=gpu --slurm=time=24:00:00.")
LAUNCH_FLAGS = ("launcher", "nodes", "tasks_per_node", "gpus_per_task", "slurm")



def distributed_settings():
  """The multi-process flags as `cnnjax.train.distributed.DistributedSettings`."""
  from cnnjax.train.distributed import DistributedSettings   # No JAX import.
  return DistributedSettings(
      mode=DISTRIBUTED.value, coordinator_address=COORDINATOR_ADDRESS.value,
      num_processes=NUM_PROCESSES.value, process_id=PROCESS_ID.value,
      timeout_s=DISTRIBUTED_TIMEOUT.value, heartbeat_timeout_s=HEARTBEAT_TIMEOUT.value)


def job_shape():
  """`--nodes`, `--tasks_per_node`, `--gpus_per_task` as a `JobShape`."""
  from cnnjax.sweeps.slurm import JobShape   # No JAX import.
  return JobShape(nodes=NODES.value, tasks_per_node=TASKS_PER_NODE.value,
                  gpus_per_task=GPUS_PER_TASK.value)


def without_launch_flags(argv: list[str]) -> list[str]:
  """`argv` without the launch flags (`--launcher=slurm --nodes 2 ...`): the command a
  job's processes run."""
  kept, skip_value = [], False
  for arg in argv:
    if skip_value:
      skip_value = False
      continue
    name, equals, _ = arg[2:].partition("=")
    if arg.startswith("--") and name in LAUNCH_FLAGS:
      skip_value = not equals   # `--nodes 2`: the value is the next argument.
      continue
    kept.append(arg)
  return kept


def fail(message: str, status: int = 2) -> None:
  """Prints a one-line `error: ...` and exits with `status`."""
  sys.stderr.write("error: " + " ".join(str(message).split()) + "\n")
  sys.stderr.flush()
  sys.exit(status)


def last_line(error: BaseException) -> str:
  """The final line of an error message (config-file errors embed a traceback)."""
  lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
  return lines[-1] if lines else type(error).__name__


def required_workdir() -> str:
  """`--workdir`, or a one-line error saying it is required."""
  if WORKDIR.value is None:
    fail("--workdir is required: the directory of the run.")
  return WORKDIR.value


def loaded_config():
  """`--config`, loaded; a one-line error when it is missing or fails to load."""
  config = CONFIG.value
  if config is None:
    fail("--config is required for train, e.g. --config=configs/dcgan.py.")
  try:
    config.keys()  # A config file that failed to load raises on first access.
  except (OSError, SyntaxError, ImportError) as error:   # Missing, or not Python.
    fail(f"--config: {last_line(error)}")
  return config
