"""Sweeps: expansion and validation, the local launcher over device groups with a failing
run, resume, vectorised seeds, the SLURM job, provenance and the report."""

import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, load_config

FAKE_SLURM = pathlib.Path(__file__).parent / "fake_slurm"

from cnnjax.errors import ConfigError
from cnnjax.sweeps import Sweep, product, zipped
from cnnjax.sweeps.spec import expand, load_plan, run_name

# Four steps, logged and checkpointed every two: a run that is resumable half-way.
TINY_FIXED = {"train.num_steps": 4, "train.log_every": 2, "train.sample_every": 4,
              "checkpoint.every": 2}
TIMING = ("steps_per_sec", "wall_time")


def write_sweep(directory: pathlib.Path, name: str, body: str) -> str:
  """Writes experiments-style sweep file `name`.py whose get_sweep returns `body`."""
  path = directory / f"{name}.py"
  path.write_text("from cnnjax.sweeps import Sweep, product, zipped\n\n"
                  f"def get_sweep():\n  return {body}\n")
  return str(path)


def run_cli(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "run.py", *args], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=600, env=os.environ.copy())


def records(path: pathlib.Path) -> list[dict]:
  return [{key: value for key, value in json.loads(line).items() if key not in TIMING}
          for line in path.read_text().splitlines() if line.strip()]


def test_expansion_crosses_products_zips_and_seeds_into_named_runs():
  config = load_config("dcgan.py", "tiny")
  sweep = Sweep(config="configs/dcgan.py", variant="tiny",
                grid=product(zipped({"optim.g_lr": [1e-4, 2e-4], "optim.d_lr": [4e-4, 2e-4]}),
                             {"loss.name": ["hinge", "non_saturating"],
                              "model.upsample": ["fast"]}),
                seeds=[0, 1], fixed={"train.num_steps": 7})
  runs = expand(sweep, config)
  assert len(runs) == 2 * 2 * 1 * 2
  assert runs[0].name == ("optim.g_lr=0.0001,optim.d_lr=0.0004,loss.name=hinge,"
                          "model.upsample=fast,seed=0")
  assert runs[1].name.endswith("loss.name=hinge,model.upsample=fast,seed=1")
  assert runs[0].setting == runs[1].setting == runs[0].name.rsplit(",seed=", 1)[0]
  assert len({run.setting for run in runs}) == 4
  assert {(run.overrides["optim.g_lr"], run.overrides["optim.d_lr"]) for run in runs} == {
      (1e-4, 4e-4), (2e-4, 2e-4)}  # Zipped, not crossed.
  assert all(run.num_steps == 7 for run in runs)
  assert runs[3].config_flags() == [
      "--config.train.num_steps=7", "--config.optim.g_lr=0.0001", "--config.optim.d_lr=0.0004",
      "--config.loss.name=non_saturating", "--config.model.upsample=fast", "--config.seed=1"]
  # Names are safe file names; long ones are cut but keep their seed.
  assert run_name({"data.data_dir": "/a b/c", "train.diffaugment": "translation,cutout",
                   "model.d_spectral_norm": True}, 2) == (
      "data.data_dir=_a_b_c,train.diffaugment=translation+cutout,"
      "model.d_spectral_norm=true,seed=2")
  long_name = run_name({f"field{i}.x": "v" * 20 for i in range(20)}, 12)
  assert len(long_name) == 200 and long_name.endswith(",seed=12")


@pytest.mark.parametrize("sweep_kwargs,expected", [
    (lambda: dict(grid=product({"loss.nme": ["hinge"]})),
     "loss.nme, a field the config does not have; did you mean loss.name?"),
    (lambda: dict(grid=product({"train.num_steps": ["10"]})),
     "sets train.num_steps to '10' (str), but the config's train.num_steps is of type int"),
    (lambda: dict(grid=product({"model.spectral": [True]})), "model.spectral"),
    (lambda: dict(grid=product({"optim": [1]})), "optim, a config section"),
    (lambda: dict(grid=product({"seed": [1, 2]})), "list seeds in Sweep(seeds=[...])"),
    (lambda: dict(grid=zipped({"optim.g_lr": [1e-4], "optim.d_lr": [1e-4, 2e-4]})),
     "one length"),
    (lambda: dict(fixed={"loss.name": "hinge"}, grid=product({"loss.name": ["hinge"]})),
     "both fixes and sweeps loss.name"),
])
def test_bad_sweeps_fail_before_anything_runs(sweep_kwargs, expected):
  config = load_config("dcgan.py", "tiny")
  with pytest.raises(ConfigError) as error:
    expand(Sweep(config="configs/dcgan.py", variant="tiny", **sweep_kwargs()), config)
  assert expected in str(error.value) and "\n" not in str(error.value)


def test_shipped_studies_validate_against_their_configs():
  gan = load_plan(str(REPO_ROOT / "experiments" / "gan_ablation.py"))
  assert len(gan.runs) == 3 * 2 * 2 * 3 and len(gan.settings()) == 12
  assert {run.overrides["loss.name"] for run in gan.runs} == {
      "non_saturating", "hinge", "wasserstein"}
  vae = load_plan(str(REPO_ROOT / "experiments" / "vae_beta.py"))
  assert sorted({run.overrides["loss.beta"] for run in vae.runs}) == [0.5, 1, 2, 4, 8]
  assert len(vae.runs) == 15 and {run.seed for run in vae.runs} == {0, 1, 2}
  pix2pix = load_plan(str(REPO_ROOT / "experiments" / "pix2pix_ablation.py"))
  assert len(pix2pix.runs) == 9 and len(pix2pix.settings()) == 3
  assert {(run.overrides["loss.lambda_gan"], run.overrides["loss.lambda_l1"])
          for run in pix2pix.runs} == {(0.0, 100.0), (1.0, 0.0), (1.0, 100.0)}


def test_device_groups_choose_devices_by_environment():
  from cnnjax.sweeps.devices import Devices, device_groups, group_environment
  gpus = Devices(platform="gpu", ids=(0, 1, 2, 3), kinds=("H100",) * 4,
                 visible=("4", "5", "6", "7"))
  assert device_groups(gpus, None) == [(0,), (1,), (2,), (3,)]
  groups = device_groups(gpus, 2)
  assert groups == [(0, 1), (2, 3)]
  assert group_environment(gpus, groups[1], {})["CUDA_VISIBLE_DEVICES"] == "6,7"
  cpus = Devices(platform="cpu", ids=tuple(range(8)), kinds=("cpu",) * 8)
  assert device_groups(cpus, None) == [tuple(range(8))]
  env = group_environment(cpus, (4, 5, 6, 7), {
      "XLA_FLAGS": "--xla_force_host_platform_device_count=8 --xla_cpu_foo=1"})
  assert env["XLA_FLAGS"] == "--xla_cpu_foo=1 --xla_force_host_platform_device_count=4"
  with pytest.raises(ConfigError, match="does not fit the 4 gpu devices"):
    device_groups(gpus, 5)


def test_bad_override_on_the_command_line_is_one_line_and_writes_nothing(tmp_path):
  sweep = write_sweep(tmp_path, "bad", 'Sweep(config="configs/dcgan.py", variant="tiny", '
                      'grid=product({"loss.name": ["hinge"], "train.batch_size": [8.5]}))')
  result = run_cli("sweep", f"--sweep={sweep}", f"--workdir={tmp_path / 'out'}")
  assert result.returncode == 2, result.stderr[-2000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: Sweep ")
  assert "train.batch_size" in lines[0] and "Traceback" not in result.stderr
  assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory, data_dir):
  """A finished 4-run sweep over two groups of 4 fake devices: two seeds of a working
  setting and two of a setting the runtime rejects."""
  directory = tmp_path_factory.mktemp("sweep")
  fixed = {**TINY_FIXED, "data.data_dir": data_dir}
  sweep = write_sweep(directory, "tiny", f'Sweep(config="configs/dcgan.py", '
                      f'variant="tiny", grid=product({{"loss.name": ["non_saturating", '
                      f'"bogus"]}}), seeds=[0, 1], fixed={fixed!r}, '
                      f'summary_metrics=("d_loss", "g_loss", "not_logged"))')
  workdir = directory / "out"
  result = run_cli("sweep", f"--sweep={sweep}", f"--workdir={workdir}",
                   "--devices_per_run=4")
  return sweep, workdir, result


def test_local_launcher_runs_every_run_and_reports_the_failures(tiny_sweep):
  _, workdir, result = tiny_sweep
  assert result.returncode == 1, result.stderr[-3000:]
  assert result.stderr.strip().splitlines()[-1].startswith("error: 2 of 4 runs failed")
  manifest = json.loads((workdir / "sweep.json").read_text())
  runs = {entry["name"]: entry for entry in manifest["runs"]}
  assert manifest["device_groups"] == [[0, 1, 2, 3], [4, 5, 6, 7]]
  for seed in (0, 1):
    good = runs[f"loss.name=non_saturating,seed={seed}"]
    assert good["status"] == "finished" and good["error"] is None
    assert "--xla_force_host_platform_device_count=4" in good["command"]
    assert f"--config.seed={seed}" in good["command"]
    assert [record["step"] for record in records(
        workdir / good["name"] / "metrics.jsonl")] == [2, 4]
    bad = runs[f"loss.name=bogus,seed={seed}"]
    assert bad["status"] == "failed"
    assert bad["error"].startswith("error: Unknown loss.name 'bogus'")
    assert "failed" in result.stdout and bad["error"] in result.stdout
  # The two device groups ran at once: the second run started before the first ended.
  starts = sorted(entry["started"] for entry in runs.values())
  assert starts[1] <= min(entry["ended"] for entry in runs.values())


def test_every_run_records_its_provenance(tiny_sweep):
  _, workdir, _ = tiny_sweep
  provenance = json.loads(
      (workdir / "loss.name=non_saturating,seed=1" / "provenance.json").read_text())
  assert provenance["seed"] == 1
  assert provenance["git"]["commit"] and isinstance(provenance["git"]["dirty"], bool)
  assert provenance["packages"]["jax"] and provenance["packages"]["flax"]
  assert provenance["devices"]["device_count"] == 4
  assert "run.py --config=configs/dcgan.py:tiny" in provenance["command"]
  assert provenance["command"].startswith("XLA_FLAGS=")


def test_relaunch_skips_finished_runs_and_resumes_interrupted_ones(tiny_sweep, tmp_path):
  sweep, finished_dir, _ = tiny_sweep
  workdir = tmp_path / "out"
  shutil.copytree(finished_dir, workdir)
  done, half = (workdir / f"loss.name=non_saturating,seed={seed}" for seed in (0, 1))
  expected = records(half / "metrics.jsonl")
  # Make seed 1 as if the launcher had been killed after its step-2 checkpoint.
  shutil.rmtree(half / "checkpoints" / "4")
  (half / "metrics.jsonl").write_text(
      (half / "metrics.jsonl").read_text().splitlines(keepends=True)[0])
  manifest = json.loads((workdir / "sweep.json").read_text())
  for entry in manifest["runs"]:
    if entry["name"] == half.name:
      entry["status"] = "running"
  (workdir / "sweep.json").write_text(json.dumps(manifest))
  done_metrics_time = (done / "metrics.jsonl").stat().st_mtime_ns

  result = run_cli("sweep", f"--sweep={sweep}", f"--workdir={workdir}",
                   "--devices_per_run=4")
  assert result.returncode == 1, result.stderr[-3000:]
  runs = {entry["name"]: entry for entry in
          json.loads((workdir / "sweep.json").read_text())["runs"]}
  assert runs[done.name]["status"] == runs[half.name]["status"] == "finished"
  assert runs[done.name]["attempts"] == 1 and runs[half.name]["attempts"] == 2
  assert "already finished, skipped" in result.stdout
  assert (done / "metrics.jsonl").stat().st_mtime_ns == done_metrics_time
  log = (workdir / "logs" / f"{half.name}.stderr.log").read_text()
  assert "Resumed from the checkpoint at step 2" in log
  # The recorded command, resumed, reproduces the uninterrupted run bit for bit.
  assert records(half / "metrics.jsonl") == expected
  assert runs["loss.name=bogus,seed=0"]["attempts"] == 2


def test_vmapped_seeds_match_separate_runs(tiny_sweep, tmp_path, data_dir):
  _, separate_dir, _ = tiny_sweep
  fixed = {**TINY_FIXED, "data.data_dir": data_dir}
  sweep = write_sweep(tmp_path, "vmapped", f'Sweep(config="configs/dcgan.py", '
                      f'variant="tiny", grid=product({{"loss.name": ["non_saturating"]}}), '
                      f'seeds=[0, 1], vmap_seeds=True, fixed={fixed!r})')
  workdir = tmp_path / "out"
  result = run_cli("sweep", f"--sweep={sweep}", f"--workdir={workdir}",
                   "--devices_per_run=4")
  assert result.returncode == 0, result.stderr[-3000:]
  manifest = json.loads((workdir / "sweep.json").read_text())
  assert [entry["status"] for entry in manifest["runs"]] == ["finished", "finished"]
  assert "-m cnnjax.sweeps.vmap_seeds" in manifest["runs"][0]["command"]
  for seed in (0, 1):
    name = f"loss.name=non_saturating,seed={seed}"
    vmapped = records(workdir / name / "metrics.jsonl")
    separate = records(separate_dir / name / "metrics.jsonl")
    assert [record["step"] for record in vmapped] == [2, 4]
    for got, want in zip(vmapped, separate):
      assert got.keys() == want.keys()
      for key in want:  # Equal up to float rounding (vmapped convolutions sum otherwise).
        assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key
    assert (workdir / name / "checkpoints" / "4").is_dir()
    assert json.loads((workdir / name / "config.json").read_text())["seed"] == seed
    assert json.loads((workdir / name / "provenance.json").read_text())[
        "written_by"] == "vmap_seeds"


def test_slurm_launcher_writes_an_array_job(tmp_path, capsys):
  from cnnjax.sweeps.launch import run_sweep_command
  sweep = write_sweep(tmp_path, "study", 'Sweep(config="configs/dcgan.py", '
                      'variant="tiny", grid=product({"loss.name": ["hinge", '
                      '"non_saturating", "least_squares"]}), seeds=[3], '
                      'slurm={"partition": "gpu", "time": "01:00:00"})')
  workdir = tmp_path / "out"
  assert run_sweep_command(sweep, str(workdir), launcher="slurm", devices_per_run=2) is None
  printed = capsys.readouterr().out
  script = (workdir / "sweep.slurm").read_text()
  assert f"sbatch {workdir / 'sweep.slurm'}" in printed
  for line in ("#SBATCH --array=0-2", "#SBATCH --gres=gpu:2", "#SBATCH --partition=gpu",
               "#SBATCH --time=01:00:00", "#SBATCH --job-name=cnnjax-study",
               "$SLURM_ARRAY_TASK_ID", f"cd {REPO_ROOT}"):
    assert line in script
  assert subprocess.run(["bash", "-n", str(workdir / "sweep.slurm")]).returncode == 0
  commands = (workdir / "sweep_commands.txt").read_text().splitlines()
  assert len(commands) == 3
  assert shlex.split(commands[1]) == [
      "run.py", "--config=configs/dcgan.py:tiny", "--config.loss.name=non_saturating",
      "--config.seed=3", f"--workdir={workdir / 'loss.name=non_saturating,seed=3'}"]
  # The fake sbatch runs every array task; with PYTHON=echo each task's log shows the
  # arguments its srun would start, task i running line i + 1.
  state = tmp_path / "slurm_state"
  state.mkdir()
  submitted = subprocess.run(
      [str(FAKE_SLURM / "sbatch"), str(workdir / "sweep.slurm")], capture_output=True,
      text=True, timeout=60,
      env={**os.environ, "PYTHON": "echo", "FAKE_SLURM_STATE": str(state),
           "FAKE_SLURM_JOB_ID": "700", "PATH": f"{FAKE_SLURM}{os.pathsep}{os.environ['PATH']}"})
  assert submitted.returncode == 0, submitted.stderr
  for task, command in enumerate(commands):
    log = workdir / "slurm" / f"700_{task}.out"
    assert log.read_text().split() == shlex.split(command), task
  manifest = json.loads((workdir / "sweep.json").read_text())
  assert manifest["launcher"] == "slurm"
  assert [entry["slurm_task"] for entry in manifest["runs"]] == [0, 1, 2]


def test_multi_process_sweep_runs_are_srun_tasks_and_bad_combinations_are_refused(
    tmp_path, capsys):
  from cnnjax.sweeps.launch import run_sweep_command
  from cnnjax.sweeps.slurm import JobShape
  body = ('Sweep(config="configs/dcgan.py", variant="tiny", '
          'grid=product({"loss.name": ["hinge", "least_squares"]}), seeds=[0, 1]EXTRA)')
  sweep = write_sweep(tmp_path, "wide", body.replace("EXTRA", ""))
  workdir = tmp_path / "wide_out"
  shape = JobShape(nodes=2, tasks_per_node=4, gpus_per_task=1)
  assert run_sweep_command(sweep, str(workdir), launcher="slurm", shape=shape,
                           slurm_options={"partition": "a100", "requeue": ""}) is None
  assert "8 process(es) each" in capsys.readouterr().out
  script = (workdir / "sweep.slurm").read_text()
  for line in ("#SBATCH --array=0-3", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4",
               "#SBATCH --gpus-per-task=1", "#SBATCH --partition=a100",
               "#SBATCH --signal=B:USR1@120", 'srun --kill-on-bad-exit=1 "$PYTHON" "$@"'):
    assert line in script
  assert "--gres" not in script and "#SBATCH --requeue" not in script  # "" drops it.
  # vmapped seeds share one process's devices; the local launcher is one process per run.
  vmapped = write_sweep(tmp_path, "vmapped", body.replace("EXTRA", ", vmap_seeds=True"))
  with pytest.raises(ConfigError, match="vmap_seeds trains every seed"):
    run_sweep_command(vmapped, str(tmp_path / "vmapped_out"), launcher="slurm", shape=shape)
  with pytest.raises(ConfigError, match="add --launcher=slurm"):
    run_sweep_command(sweep, str(tmp_path / "local_out"), shape=JobShape(nodes=2))
  with pytest.raises(ConfigError, match="--tasks_per_node=0 must be >= 1"):
    run_sweep_command(sweep, str(tmp_path / "bad_out"), launcher="slurm",
                      shape=JobShape(tasks_per_node=0))
  assert not (tmp_path / "vmapped_out").exists() and not (tmp_path / "local_out").exists()


def test_report_tables_and_plots_of_a_finished_sweep(tiny_sweep):
  from PIL import Image
  from cnnjax.sweeps.report import write_report
  _, workdir, _ = tiny_sweep
  printed = write_report(str(workdir))
  markdown = (workdir / "report.md").read_text()
  # The sweep's summary metrics lead (the one no run logged is left out).
  summary = markdown.split("## Summary: final values", 1)[1].split("##", 1)[0]
  assert "| setting | seeds | d_loss | g_loss |" in summary
  assert "not_logged" not in markdown
  assert "| setting | seeds | d_loss | g_loss |" in printed
  assert "| loss.name=non_saturating | 2/2 |" in markdown
  assert "| loss.name=bogus | 0/2 |" in markdown
  assert "Unknown loss.name 'bogus'" in markdown and "g_loss" in markdown
  assert "![" in markdown and "report_ablation.png" in printed
  rows = (workdir / "report.csv").read_text().splitlines()
  header = rows[0].split(",")
  good = dict(zip(header, rows[1].split(",")))
  finals = [records(workdir / f"loss.name=non_saturating,seed={seed}" / "metrics.jsonl")[-1]
            for seed in (0, 1)]
  assert good["setting"] == "loss.name=non_saturating" and good["num_finished"] == "2"
  assert float(good["g_loss_final_mean"]) == pytest.approx(
      (finals[0]["g_loss"] + finals[1]["g_loss"]) / 2, rel=1e-5)
  assert float(good["d_loss_final_std"]) > 0
  sizes = {}
  for name in ("report_curves.png", "report_ablation.png"):
    with Image.open(workdir / name) as image:
      assert image.format == "PNG" and image.size[0] > 300
      sizes[name] = image.size
  # A metric no run has, asked for by name, is a one-line error; nothing is rewritten.
  before = (workdir / "report.md").read_text()
  with pytest.raises(ConfigError) as error:
    write_report(str(workdir), metrics=["g_loss", "fdi"])
  assert "--metrics names fdi" in str(error.value) and "\n" not in str(error.value)
  assert "g_loss" in str(error.value).split("available:")[1]
  assert (workdir / "report.md").read_text() == before
  # --metrics overrides the sweep's: one bar-chart panel instead of two.
  printed = write_report(str(workdir), metrics=["g_loss"])
  assert "| setting | seeds | g_loss |" in printed
  with Image.open(workdir / "report_ablation.png") as image:
    assert image.size[0] < sizes["report_ablation.png"][0]


def test_report_curves_put_held_out_metrics_at_the_step_they_were_computed(tmp_path):
  from cnnjax.sweeps.report import read_run
  lines = [{"step": 100, "loss": 3.0, "test_neg_elbo": 9.0, "test_step": 0},
           {"step": 200, "loss": 2.0, "test_neg_elbo": 9.0, "test_step": 0},
           {"step": 300, "loss": 1.0, "test_neg_elbo": 5.0, "test_step": 250}]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
  run = read_run(str(tmp_path), "run", "setting", 0, "finished")
  assert run.curves["loss"] == ([100, 200, 300], [3.0, 2.0, 1.0])
  assert run.curves["test_neg_elbo"] == ([0, 250], [9.0, 5.0])
  assert run.final["test_neg_elbo"] == 5.0 and "test_step" not in run.curves
