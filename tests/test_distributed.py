"""Multi-process runs: when `jax.distributed` starts (settings, environment, cluster
detection), and real runs of 2 processes x 4 CPU devices (gloo): the tiny DCGAN against
the 1-process x 8-device one (`tiny_gan_run`), killed and relaunched, as a SLURM job
(fake `sbatch`/`srun`/`scontrol` from tests/fake_slurm on PATH, so JAX's own SLURM
detection connects the processes) requeued near its time limit, the tiny VAE, and
`run.py evaluate`."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO_ROOT
from cnnjax.train.distributed import (DistributedError, DistributedSettings,
                                      detected_cluster, plan)

TIMEOUTS = {"initialization_timeout": 300, "heartbeat_timeout_seconds": 100}
FAKE_SLURM = pathlib.Path(__file__).parent / "fake_slurm"
# The 2-process runs train 30 steps (tiny_gan_run's 20 are their first 20: constant
# learning rates), keeping every checkpoint, so that a kill after the first checkpoint
# (step 10) lands mid-run with room to spare.
GAN_RUN = ("--config=configs/dcgan.py:tiny", "--config.train.num_steps=30",
           "--config.checkpoint.keep=3")
HEARTBEAT_S = 10


def test_one_plain_process_never_initialises():
  assert plan(DistributedSettings(), {}) is None
  assert plan(DistributedSettings(mode="off"), {"SLURM_JOB_ID": "1",
                                                "SLURM_NTASKS": "4"}) is None
  assert plan(DistributedSettings(coordinator_address="h:1", num_processes=1,
                                  process_id=0), {}) is None
  # A one-task SLURM job is one plain process too.
  assert plan(DistributedSettings(), {"SLURM_JOB_ID": "1", "SLURM_NTASKS": "1"}) is None


def test_explicit_settings_environment_and_clusters():
  explicit = DistributedSettings(coordinator_address="h:1234", num_processes=2,
                                 process_id=1, timeout_s=7, heartbeat_timeout_s=3)
  assert plan(explicit, {}) == {"coordinator_address": "h:1234", "num_processes": 2,
                                "process_id": 1, "initialization_timeout": 7,
                                "heartbeat_timeout_seconds": 3}
  # JAX reads its own variables, or detects SLURM / a TPU pod itself.
  assert plan(DistributedSettings(), {"JAX_COORDINATOR_ADDRESS": "h:1"}) == TIMEOUTS
  slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NUM_TASKS": "8"}
  assert detected_cluster(slurm) == "slurm" and plan(DistributedSettings(), slurm) == TIMEOUTS
  tpu = {"TPU_WORKER_HOSTNAMES": "t0,t1"}
  assert detected_cluster(tpu) == "tpu" and plan(DistributedSettings(), tpu) == TIMEOUTS
  assert detected_cluster({"TPU_WORKER_HOSTNAMES": "t0"}) is None
  assert plan(DistributedSettings(mode="on"), {}) == TIMEOUTS


@pytest.mark.parametrize("settings, message", [
    (DistributedSettings(mode="off", num_processes=2), "--distributed=off with"),
    (DistributedSettings(coordinator_address="h:1"), "missing --num_processes, --process_id"),
    (DistributedSettings(coordinator_address="h:1", num_processes=2, process_id=2),
     "--process_id=2 must be in [0, 2)"),
    (DistributedSettings(num_processes=0), "--num_processes=0 must be >= 1"),
    (DistributedSettings(timeout_s=0), "are seconds, >= 1"),
    (DistributedSettings(mode="maybe"), "use one of auto, on, off"),
])
def test_inconsistent_settings_are_one_line_errors(settings, message):
  with pytest.raises(DistributedError) as raised:
    plan(settings, {})
  assert message in str(raised.value) and "\n" not in str(raised.value)


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("localhost", 0))
    return probe.getsockname()[1]


def _environment(devices_per_process: int, **extra: str) -> dict[str, str]:
  return {**os.environ, **extra,
          "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_per_process}"}


def _launch(workdir, data_dir, num_processes: int, *args: str, command: tuple = ()):
  """Starts `num_processes` run.py processes (8 devices in all) of `args`."""
  port = _free_port()
  return [subprocess.Popen(
      [sys.executable, "run.py", *command, *args,
       *([f"--config.data.data_dir={data_dir}"] if data_dir else []), f"--workdir={workdir}", f"--coordinator_address=localhost:{port}",
       f"--num_processes={num_processes}", f"--process_id={index}",
       "--distributed_timeout=60", f"--heartbeat_timeout={HEARTBEAT_S}"],
      cwd=REPO_ROOT, env=_environment(8 // num_processes), stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True) for index in range(num_processes)]


def _finish(processes) -> None:
  for process in processes:
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]


def _state(workdir, kind_module, step=None):
  """A checkpoint's (step, state), restored by this one process (8 devices)."""
  import jax   # After conftest's XLA_FLAGS.
  from cnnjax.runs.restore import open_as
  run = open_as(str(workdir), kind_module.KIND, step)
  return run.step, jax.device_get(run.state)


def _metrics(workdir) -> dict[int, dict]:
  """metrics.jsonl by step (a resumed run's rewritten steps: the last record)."""
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return {record["step"]: record for record in map(json.loads, lines)}


def _checkpoints(workdir) -> list[int]:
  directory = pathlib.Path(workdir, "checkpoints")
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()
                ) if directory.is_dir() else []


def _wait_for_a_checkpoint(workdir, processes, timeout=300.0) -> None:
  deadline = time.time() + timeout
  while time.time() < deadline:
    if _checkpoints(workdir):
      return
    for process in processes:
      if process.poll() is not None:
        pytest.fail(f"a process ended early: {process.communicate()[1][-2000:]}")
    time.sleep(0.05)
  pytest.fail("no checkpoint appeared")


def _assert_close(tree_a, tree_b, rtol, atol):
  import jax
  leaves_a, leaves_b = jax.tree.leaves(tree_a), jax.tree.leaves(tree_b)
  assert len(leaves_a) == len(leaves_b)
  for leaf_a, leaf_b in zip(leaves_a, leaves_b):
    np.testing.assert_allclose(np.asarray(leaf_a, np.float64),
                               np.asarray(leaf_b, np.float64), rtol=rtol, atol=atol)


def _assert_same_run(workdir, reference, kind_module):
  """Bit-identical final states and metrics (wall-clock fields aside)."""
  import jax
  (step, state), (step_ref, state_ref) = (_state(workdir, kind_module),
                                          _state(reference, kind_module))
  assert step == step_ref
  for leaf, leaf_ref in zip(jax.tree.leaves(state), jax.tree.leaves(state_ref)):
    assert np.array_equal(np.asarray(leaf), np.asarray(leaf_ref))
  metrics, metrics_ref = _metrics(workdir), _metrics(reference)
  assert sorted(metrics) == sorted(metrics_ref)
  for step in metrics:
    for name, value in metrics_ref[step].items():
      if name not in ("wall_time", "steps_per_sec"):
        assert metrics[step][name] == value, (step, name)


@pytest.fixture(scope="module")
def two_process_gan_run(tmp_path_factory, tiny_gan_run, data_dir):
  """GAN_RUN over 2 processes x 4 devices, uninterrupted (`tiny_gan_run` has prepared
  the data: two processes must not both prepare it)."""
  workdir = tmp_path_factory.mktemp("two_processes")
  _finish(_launch(workdir, data_dir, 2, *GAN_RUN))
  return workdir


def test_two_processes_train_like_one(two_process_gan_run, tiny_gan_run):
  from cnnjax.runs import gan
  workdir = two_process_gan_run
  provenance = json.loads((workdir / "provenance.json").read_text())
  assert json.dumps(provenance).count('"process_count": 2') == 1
  # One set of logs, grids and checkpoints (process 0 writes; orbax coordinates).
  assert len(list((workdir / "tensorboard").rglob("*tfevents*"))) == 1
  assert _checkpoints(workdir) == [10, 20, 30]
  one_grids = sorted(p.name for p in (tiny_gan_run / "samples").iterdir())
  assert sorted(p.name for p in (workdir / "samples").iterdir())[:len(one_grids)] == one_grids
  # Same batches, latents and per-device work; only the cross-process all-reduce (gloo's
  # ring) adds the 8 devices' gradients in another order than XLA's in-process one, so
  # the numbers agree to float32 rounding, not bit for bit.
  two, one = _metrics(workdir), _metrics(tiny_gan_run)
  assert sorted(one) == [5, 10, 15, 20]
  for step in one:
    for name in ("d_loss", "g_loss", "d_real", "d_fake"):
      np.testing.assert_allclose(two[step][name], one[step][name], rtol=1e-5, atol=1e-6)
  # The checkpoints, written by two processes, restore in one, close to one's own.
  (step_two, state_two), (step_one, state_one) = (_state(workdir, gan, 20),
                                                  _state(tiny_gan_run, gan))
  assert step_two == step_one == 20
  _assert_close(state_two, state_one, rtol=1e-4, atol=1e-5)


def test_a_killed_process_stops_the_other_and_relaunching_resumes_exactly(
    two_process_gan_run, tmp_path, data_dir):
  from cnnjax.runs import gan
  workdir = tmp_path / "killed"
  processes = _launch(workdir, data_dir, 2, *GAN_RUN)
  _wait_for_a_checkpoint(workdir, processes)
  processes[1].kill()
  killed_at = time.monotonic()
  # The survivor must not wait forever: its heartbeat to the coordinator (or the
  # coordinator's to the dead process) times out and it exits with an error.
  _, stderr = processes[0].communicate(timeout=HEARTBEAT_S + 110)
  processes[1].wait()
  assert processes[0].returncode != 0, "the run finished before the kill: " + stderr[-500:]
  assert time.monotonic() - killed_at < HEARTBEAT_S + 100
  assert _checkpoints(workdir)[-1] < 30
  _finish(_launch(workdir, data_dir, 2, *GAN_RUN))
  _assert_same_run(workdir, two_process_gan_run, gan)


def _slurm_environment(state_dir) -> dict[str, str]:
  """The fake SLURM tools first on PATH, and a job id whose coordinator port (JAX: job id
  mod 4096 + 61440) is free."""
  for offset in range(4096):
    port = 61440 + (os.getpid() + offset) % 4096
    with socket.socket() as probe:
      try:
        probe.bind(("localhost", port))
      except OSError:
        continue
    return _environment(4, PATH=f"{FAKE_SLURM}{os.pathsep}{os.environ['PATH']}",
                        FAKE_SLURM_STATE=str(state_dir),
                        FAKE_SLURM_JOB_ID=str(4096 * 5 + port - 61440))
  pytest.skip("no free port in JAX's SLURM coordinator range 61440-65535")


def test_a_slurm_job_trains_over_two_tasks_and_requeues_near_its_time_limit(
    two_process_gan_run, tmp_path, data_dir):
  from cnnjax.runs import gan
  workdir = tmp_path / "slurm_run"
  written = subprocess.run(
      [sys.executable, "run.py", *GAN_RUN, f"--config.data.data_dir={data_dir}",
       f"--workdir={workdir}", "--launcher=slurm", "--nodes=1", "--tasks_per_node", "2",
       "--gpus_per_task=0", "--slurm=time=00:10:00"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
  assert written.returncode == 0, written.stderr[-2000:]
  script = workdir / "slurm" / "run.slurm"
  assert f"sbatch {script}" in written.stdout
  text = script.read_text()
  for line in ("#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=2", "#SBATCH --requeue",
               "#SBATCH --signal=B:USR1@120", "#SBATCH --time=00:10:00",
               "srun --kill-on-bad-exit=1"):
    assert line in text
  command = next(line for line in text.splitlines() if line.startswith("set -- "))
  assert "--launcher" not in command and "--tasks_per_node" not in command
  assert "--config.train.num_steps=30" in command
  assert not _checkpoints(workdir)   # Writing the job trains nothing.
  state_dir = tmp_path / "slurm_state"
  state_dir.mkdir()
  env = _slurm_environment(state_dir)
  job = subprocess.Popen(["sbatch", str(script)], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  job_id = env["FAKE_SLURM_JOB_ID"]
  _wait_for_a_checkpoint(workdir, [job])
  # SLURM's warning before the time limit: the batch shell gets USR1.
  os.kill(int((state_dir / f"{job_id}.pid").read_text()), signal.SIGUSR1)
  stdout, stderr = job.communicate(timeout=600)
  errors = (workdir / "slurm" / f"{job_id}.err").read_text()
  assert job.returncode == 0, stderr[-2000:] + errors[-3000:]
  assert f"Submitted batch job {job_id}" in stdout
  # The job checkpointed, asked to be requeued, and its second run resumed to the end.
  assert (state_dir / "requeued").read_text().split() == [job_id]
  assert "time limit is near: checkpointing, then requeueing" in errors
  assert "Stopped at step" in errors and "steps " in errors
  provenance = json.loads((workdir / "provenance.json").read_text())
  assert provenance["devices"]["process_count"] == 2   # JAX's SLURM detection.
  _assert_same_run(workdir, two_process_gan_run, gan)


def test_two_processes_train_a_vae_like_one(tmp_path, tiny_vae_run, data_dir):
  from cnnjax.runs import vae
  workdir = tmp_path / "vae"
  _finish(_launch(workdir, data_dir, 2, "--config=configs/vae.py:tiny"))
  two, one = _metrics(workdir), _metrics(tiny_vae_run)
  assert sorted(two) == sorted(one)
  for step in one:
    for name, value in one[step].items():
      if name not in ("wall_time", "steps_per_sec") and isinstance(value, float):
        np.testing.assert_allclose(two[step][name], value, rtol=1e-5, atol=1e-6)
  assert sorted(p.name for p in (workdir / "samples").iterdir()) == sorted(
      p.name for p in (tiny_vae_run / "samples").iterdir())
  (step_two, state_two), (step_one, state_one) = (_state(workdir, vae),
                                                  _state(tiny_vae_run, vae))
  assert step_two == step_one
  _assert_close(state_two, state_one, rtol=1e-4, atol=1e-5)


def test_evaluate_over_two_processes_scores_like_one(tmp_path, tiny_gan_run,
                                                     tiny_classifier_run):
  import shutil
  scores = {}
  for num_processes in (1, 2):
    workdir = tmp_path / f"evaluated_by_{num_processes}"
    shutil.copytree(tiny_gan_run, workdir)
    (workdir / "eval.json").unlink(missing_ok=True)
    _finish(_launch(workdir, None, num_processes, "--num_samples=64",
                    f"--extractor_workdir={tiny_classifier_run}", command=("evaluate",)))
    scores[num_processes] = json.loads((workdir / "eval.json").read_text())["metrics"]
  assert set(scores[1]) >= {"fid", "kid_mean", "precision", "recall"}
  for name, value in scores[1].items():
    np.testing.assert_allclose(scores[2][name], value, rtol=1e-6, atol=1e-9)


def test_an_unreachable_coordinator_is_a_bounded_one_line_error(tmp_path):
  result = subprocess.run(
      [sys.executable, "run.py", "--config=configs/dcgan.py:tiny",
       f"--workdir={tmp_path / 'run'}", f"--coordinator_address=localhost:{_free_port()}",
       "--num_processes=2", "--process_id=1", "--distributed_timeout=3"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith("error: Could not connect to")
  assert not (tmp_path / "run").exists()


def test_a_malformed_coordinator_address_is_refused():
  from cnnjax.train.distributed import initialize
  with pytest.raises(DistributedError, match="is not host:port"):
    initialize(DistributedSettings(coordinator_address="nohost", num_processes=2,
                                   process_id=1), {})


def test_single_process_commands_refuse_a_multi_process_slurm_step(tmp_path):
  """`run.py sweep` starts its own processes: under a SLURM step of two tasks (JAX's
  detection would connect them) it is a one-line error before anything is written."""
  sweep_dir = tmp_path / "sweep"
  slurm_step = {**os.environ, "SLURM_JOB_ID": "7", "SLURM_NTASKS": "2",
                "SLURM_STEP_NUM_TASKS": "2"}
  result = subprocess.run(
      [sys.executable, "run.py", "sweep", "--sweep=experiments/gan_ablation.py",
       f"--workdir={sweep_dir}"], cwd=REPO_ROOT, capture_output=True, text=True,
      timeout=120, env=slurm_step)
  assert result.returncode == 2, result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: `run.py sweep` runs as one process") and "train" in last
  assert not sweep_dir.exists()
  # A vmapped-seeds run (what a vmap_seeds sweep starts) trains its seeds in one process.
  vmapped = subprocess.run(
      [sys.executable, "-m", "cnnjax.sweeps.vmap_seeds", "--config=configs/dcgan.py:tiny",
       "--seed=0", "--seed=1", f"--workdir={tmp_path / 'seed0'}",
       f"--workdir={tmp_path / 'seed1'}"], cwd=REPO_ROOT, capture_output=True, text=True,
      timeout=120, env=slurm_step)
  assert vmapped.returncode == 2, vmapped.stderr
  assert vmapped.stderr.strip().splitlines()[-1].startswith(
      "error: vmap_seeds trains every seed in one process")
  assert not (tmp_path / "seed0").exists()
