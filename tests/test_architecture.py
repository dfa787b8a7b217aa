"""The package's layering and acyclicity, checked by import-linter (`.importlinter`)."""

import pathlib
import shutil
import subprocess
import sys

from conftest import REPO_ROOT

LINT_IMPORTS = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"]


def _lint(root: pathlib.Path) -> subprocess.CompletedProcess:
  return subprocess.run([*LINT_IMPORTS, "--config", str(root / ".importlinter"),
                         "--no-cache"], cwd=root, capture_output=True, text=True,
                        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, timeout=300)


def test_the_package_keeps_its_contracts():
  result = _lint(REPO_ROOT)
  assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
  assert "2 kept, 0 broken" in result.stdout


def test_a_new_cycle_through_a_function_level_import_breaks_the_contracts(tmp_path):
  shutil.copytree(REPO_ROOT / "cnnjax", tmp_path / "cnnjax",
                  ignore=shutil.ignore_patterns("__pycache__"))
  shutil.copy(REPO_ROOT / ".importlinter", tmp_path / ".importlinter")
  with open(tmp_path / "cnnjax" / "io" / "images.py", "a") as file:
    file.write("\n\ndef _sneaky():\n  from cnnjax.train import loop  # A lower layer "
               "importing a higher one.\n  return loop\n")
  result = _lint(tmp_path)
  assert result.returncode != 0
  assert "0 kept, 2 broken" in result.stdout, result.stdout[-4000:]
  assert "cnnjax.io.images -> cnnjax.train.loop" in result.stdout
