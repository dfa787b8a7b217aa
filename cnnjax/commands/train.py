"""`run.py [train] --config=FILE[:VARIANT] --workdir=DIR`: train (or resume) a run, here
or (`--launcher=slurm`) as a SLURM batch job over several processes."""

import os
import sys

from cnnjax.commands import common

NAME = "train"
MULTI_PROCESS = True
USAGE = """\
  train   Train an experiment into a work directory:
            python run.py --config=configs/dcgan.py --workdir=DIR
          Pick a config variant after a colon (--config=configs/dcgan.py:tiny) and
          override any field (--config.train.num_steps=500). Misspelt fields are errors.
          The config's `experiment` field names its kind (gan, vae, classifier, ...).
          Relaunching the same command on the same DIR resumes from its newest complete
          checkpoint; SIGTERM/SIGINT checkpoint the current step and exit with status 0.
          --launcher=slurm --nodes=N --tasks_per_node=P [--gpus_per_task=G]
          [--slurm=KEY=VALUE]: write DIR/slurm/run.slurm, a requeueable batch job whose
          N x P processes (srun) train the run together, and say how to submit it."""


def _slurm_job(workdir: str, config) -> str:
  """Writes the run's SLURM job (after checking the config) and returns what to do."""
  from cnnjax.runs.registry import kind_of
  from cnnjax.sweeps.slurm import parse_options, write_run_job
  from cnnjax.io.workdir import prepare_workdir
  shape = common.job_shape()
  shape.check()
  kind = kind_of(config)
  if shape.gpus_per_task:   # Otherwise the devices per process are known only there.
    kind.validate(config, shape.num_processes * shape.gpus_per_task)
  options = parse_options(common.SLURM_OPTIONS.value)
  workdir = prepare_workdir(workdir)
  # The job runs from here, so relative --config and --workdir paths keep their meaning.
  argv = [os.path.abspath(sys.argv[0]), *common.without_launch_flags(sys.argv[1:])]
  return write_run_job(workdir, argv, shape, job_name=f"cnnjax-{os.path.basename(workdir)}",
                       extra_options=options, cwd=os.getcwd())


def main() -> None:
  workdir = common.required_workdir()
  config = common.loaded_config()
  if common.LAUNCHER.value == "slurm":
    print(_slurm_job(workdir, config))
    return
  if common.NODES.value != 1 or common.TASKS_PER_NODE.value != 1 or common.SLURM_OPTIONS.value:
    common.fail("--nodes, --tasks_per_node and --slurm shape a SLURM job: add "
                "--launcher=slurm (or start the processes yourself with "
                "--coordinator_address, --num_processes, --process_id).")
  from cnnjax.runs.registry import train_and_evaluate  # Imports jax: after flag errors.
  train_and_evaluate(config, workdir)
