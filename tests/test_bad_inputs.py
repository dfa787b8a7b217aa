"""A catalogue of bad inputs, generated from the config schema and the commands' flags.

For every experiment kind (cnnjax.runs.registry.KINDS) the tiny configs of that kind
(configs/*.py with a `tiny` variant) give every field a wrong-typed value and, for
numbers, an out-of-range one; for every command (cnnjax.commands.COMMANDS) each of its
own flags gets a wrong-typed / out-of-range value, a file where a directory is needed
or an unreadable image; plus hand-written inconsistencies (fields against each other,
the batch against the device count, missing files). Each must end `run.py` with a
one-line `error: ...`, exit status 2, no traceback, and leave an existing work
directory's files unchanged (hashed before and after). New fields, kinds and commands
are covered automatically. The cases run in one process (tests/bad_input_harness.py),
and a training config that passes validation stops before touching its work directory,
so nothing compiles.
"""

import hashlib
import json
import pathlib
import re
import subprocess
import sys

import pytest
from absl import flags

from cnnjax.commands import COMMANDS
from cnnjax.runs.registry import KINDS
from conftest import REPO_ROOT, load_config

# Fields whose every value of the right type is valid (reason given).
ANY_VALUE = {
    "seed": "any integer seeds the run",
    "data.data_dir": "any path: TFDS's data directory (checked when the data is opened)",
    "eval.reference_cache_dir": "any directory path, created when first needed (a file "
                                "there is a hand-written case)",
}
# Config fields whose number may be negative.
NEGATIVE_OK: set[str] = set()


def _configs_by_kind() -> dict[str, list[str]]:
  by_kind: dict[str, list[str]] = {}
  for path in sorted((REPO_ROOT / "configs").glob("*.py")):
    try:
      config = load_config(path.name, "tiny")
    except Exception:  # noqa: BLE001  (a config file without a tiny variant)
      continue
    by_kind.setdefault(config.get("experiment", "gan"), []).append(path.name)
  return by_kind


def _leaves(config, prefix=""):
  for name, value in config.items():
    path = f"{prefix}{name}"
    if hasattr(value, "items"):
      yield from _leaves(value, path + ".")
    else:
      yield path, value


def _field_cases(config_file: str, workdir: str, data_dir: str) -> list[list[str]]:
  config = load_config(config_file, "tiny")
  base = [f"--config=configs/{config_file}:tiny", f"--workdir={workdir}"]
  if "data" in config and "data_dir" in config.data:   # The session's prepared data.
    base.append(f"--config.data.data_dir={data_dir}")
  if "encoder" in config and "generator_workdir" in config.encoder:  # A GAN to invert.
    base.append(f"--config.encoder.generator_workdir={workdir}")
  cases = []
  for path, value in _leaves(config):
    if path in ANY_VALUE:
      continue
    values = []
    if isinstance(value, bool):
      values = ["maybe"]
    elif isinstance(value, int):
      values = ["abc"] + ([] if path in NEGATIVE_OK else ["-7"])
    elif isinstance(value, float):
      values = ["abc"] + ([] if path in NEGATIVE_OK else ["-7.0"])
    elif isinstance(value, str):
      values = ["no_such_value_1"]
    cases += [base + [f"--config.{path}={bad}"] for bad in values]
  return cases


def _flag_cases(name: str, module, files: dict[str, str]) -> list[list[str]]:
  own = flags.FLAGS.flags_by_module_dict().get(module.__name__, [])
  base = [name, f"--workdir={files['workdir']}", f"--out={files['out']}"]
  cases = [[name, f"--workdir={files['a_file']}"]]
  if name != "train":
    cases.append([name, f"--workdir={files['missing']}"])
  for flag in own:
    if flag.name in ("workdir",):
      continue
    if isinstance(flag.parser, flags.EnumParser):
      bad = ["bogus"]
    elif isinstance(flag.parser, flags.IntegerParser):
      bad = ["abc", "-5"]
    elif isinstance(flag.parser, flags.FloatParser):
      bad = ["abc", "-5.0"]
    elif "image" in flag.name:
      bad = [files["bad_image"], files["missing"]]
    elif "workdir" in flag.name or flag.name.endswith("dir"):
      bad = [files["a_file"], files["missing"]]
    elif flag.name in ("sweep", "config"):
      bad = [files["missing"] + ".py"]
    else:
      continue
    cases += [base + [f"--{flag.name}={value}"] for value in bad]
  return cases


def _hand_written(workdir: str, files: dict[str, str], data_dir: str) -> list[list[str]]:
  tiny = ["--config=configs/dcgan.py:tiny", f"--workdir={workdir}",
          f"--config.data.data_dir={data_dir}"]
  return [
      tiny + ["--config.train.batch_size=12"],   # Not divisible by the 8 devices.
      tiny + ["--config.model.d_conditioning=projection"],   # Needs a conditional G.
      tiny + ["--config.train.d_steps=3"],   # 16 does not split into 3 x 8.
      tiny + ["--config.loss.gp_weight=10.0"],   # With a BatchNorm discriminator.
      tiny + ["--config.data.image_size=7"],   # No resolution plan.
      tiny[:2] + [f"--config.data.data_dir={files['a_file']}"],   # A file, not a dir.
      tiny + [f"--config.eval.reference_cache_dir={files['a_file']}"],
      tiny + ["--config.checkpoint.best_metric=g_loss_typo"],   # Not a logged metric.
      tiny + ["--config.no_such_field=1"],
      ["--config=configs/no_such_config.py", f"--workdir={workdir}"],
      ["--config=configs/dcgan.py:no_such_variant", f"--workdir={workdir}"],
      [f"--config={files['bad_image']}", f"--workdir={workdir}"],   # Not a config file.
      ["no_such_command"],
      ["sample", f"--workdir={workdir}", f"--out={files['out']}", "--labels=abc"],
      ["sample", f"--workdir={workdir}", f"--out={files['out']}", "--step=999999"],
      tiny + ["--nodes=2"],   # A SLURM job's shape without --launcher=slurm.
      tiny + ["--launcher=slurm", "--tasks_per_node=0"],
      tiny + ["--launcher=slurm", "--slurm=partition"],   # Not KEY=VALUE.
      tiny + ["--launcher=slurm", "--gpus_per_task=3"],   # 16 does not split over 3 GPUs.
      # Commands that run as one process refuse a multi-process launch, before connecting.
      ["sample", f"--workdir={workdir}", f"--out={files['out']}",
       "--coordinator_address=localhost:9", "--num_processes=2", "--process_id=1"],
      ["sweep", "--sweep=experiments/gan_ablation.py", f"--workdir={files['missing']}",
       "--coordinator_address=localhost:9", "--num_processes=2", "--process_id=0"],
      ["train", *tiny, "--num_processes=2"],   # Missing the address and the rank.
  ]


def _tree_hash(directory: pathlib.Path) -> str:
  digest = hashlib.sha256()
  for path in sorted(p for p in directory.rglob("*") if p.is_file()):
    digest.update(str(path.relative_to(directory)).encode() + path.read_bytes())
  return digest.hexdigest()


@pytest.fixture(scope="module")
def results(tiny_gan_run, tmp_path_factory, data_dir):
  root = tmp_path_factory.mktemp("bad_inputs")
  files = {"workdir": str(tiny_gan_run), "out": str(root / "out.png"),
           "a_file": str(root / "a_file.txt"), "missing": str(root / "missing"),
           "bad_image": str(root / "not_an_image.png")}
  pathlib.Path(files["a_file"]).write_text("a file, not a directory\n")
  pathlib.Path(files["bad_image"]).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
  configs = _configs_by_kind()
  assert set(KINDS) <= set(configs), f"kinds without a tiny config: {set(KINDS) - set(configs)}"
  cases = []
  for kind in KINDS:
    for config_file in configs[kind]:
      cases += _field_cases(config_file, str(tiny_gan_run), data_dir)
  for name, module in COMMANDS.items():
    cases += _flag_cases(name, module, files)
  cases += _hand_written(str(tiny_gan_run), files, data_dir)
  cases_path, results_path = root / "cases.json", root / "results.json"
  cases_path.write_text(json.dumps(cases))
  before = _tree_hash(tiny_gan_run)
  subprocess.run([sys.executable, "tests/bad_input_harness.py", str(cases_path),
                  str(results_path)], cwd=REPO_ROOT, check=True, timeout=600)
  after = _tree_hash(tiny_gan_run)
  return json.loads(results_path.read_text()), before == after


def test_every_bad_input_is_a_one_line_error_with_status_2(results):
  outcomes, _ = results
  bad = []
  for outcome in outcomes:
    lines = [line for line in outcome["stderr"].splitlines() if line.strip()]
    ok = (outcome["status"] == 2 and outcome["traceback"] is None and lines
          and lines[-1].startswith("error: ") and "Traceback" not in outcome["stderr"])
    if not ok:
      bad.append(f"{' '.join(outcome['argv'])}: status {outcome['status']}, "
                 f"{(outcome['traceback'] or (lines or [''])[-1])[-300:]}")
  assert not bad, f"{len(bad)} of {len(outcomes)} cases:\n" + "\n".join(bad)
  assert len(outcomes) > 100


def test_errors_name_what_was_wrong(results):
  outcomes, _ = results
  for outcome in outcomes:
    override = [arg for arg in outcome["argv"]
                if re.match(r"--config\.\w", arg) and "data_dir" not in arg]
    if len(override) == 1 and outcome["status"] == 2:
      field, value = override[0][len("--config."):].split("=", 1)
      assert any(part in outcome["stderr"] for part in (field.split(".")[-1], value)), (
          outcome["argv"], outcome["stderr"])


def test_the_existing_workdir_is_unchanged(results):
  _, unchanged = results
  assert unchanged
