"""`run.py sweep`: every run of a sweep file, locally over device groups or on SLURM."""

from absl import flags

from cnnjax.commands import common

NAME = "sweep"
USAGE = """\
  sweep   Run every run of a sweep file (experiments/NAME.py) into DIR/<run name>, one
          per device group at a time, with a manifest DIR/sweep.json; rerunning resumes:
            python run.py sweep --sweep=experiments/NAME.py --workdir=DIR
              [--launcher=local|slurm] [--devices_per_run=N]
          --launcher=slurm writes DIR/sweep.slurm, an array job, and says how to submit
          it; each run spans --nodes=N x --tasks_per_node=P processes (srun), with
          --gpus_per_task=G and --slurm=KEY=VALUE options. Runs started by one local
          launcher are single-process: start `run.py sweep` as one process."""

SWEEP = flags.DEFINE_string("sweep", None, "sweep: the sweep file, e.g. "
                            "experiments/gan_ablation.py.")
DEVICES_PER_RUN = flags.DEFINE_integer("devices_per_run", None, "sweep: devices of each run "
                                       "(default: one GPU, or every CPU/TPU device).")


def main() -> None:
  workdir = common.required_workdir()
  if SWEEP.value is None:
    common.fail("--sweep is required for sweep, e.g. --sweep=experiments/gan_ablation.py.")
  from cnnjax.sweeps.launch import run_sweep_command
  from cnnjax.sweeps.slurm import parse_options
  problem = run_sweep_command(SWEEP.value, workdir, launcher=common.LAUNCHER.value,
                              devices_per_run=DEVICES_PER_RUN.value,
                              shape=common.job_shape(),
                              slurm_options=parse_options(common.SLURM_OPTIONS.value))
  if problem:
    common.fail(problem, status=1)
