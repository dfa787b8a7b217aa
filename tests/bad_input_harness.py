"""Runs many `run.py` command lines in one process (tests/test_bad_inputs.py).

  python tests/bad_input_harness.py CASES.json RESULTS.json

CASES.json is a list of argv lists (without the program name). For each, absl's flags
are reset, the line is parsed and run as `run.py` would, and the exit status and the
text written to stderr are recorded; an exception that escapes run.py is recorded as a
traceback. A training run whose config passed validation stops where it would first
touch an existing work directory (recorded as "validation passed"), so no case
compiles or writes anything.
"""

import contextlib
import io
import json
import os
import sys
import traceback

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
os.chdir(REPO_ROOT)

import run  # noqa: E402  (after sys.path)
from cnnjax.train import loop  # noqa: E402

_prepare_workdir = loop.prepare_workdir


class ValidationPassed(Exception):
  pass


def _stop_before_writing(workdir: str) -> str:
  if os.path.isdir(workdir):
    raise ValidationPassed(workdir)
  return _prepare_workdir(workdir)   # A file, or a missing directory: its own error.


def _run_case(argv: list[str]) -> dict:
  for name in [name for name in run.FLAGS if name.startswith("config.")]:
    delattr(run.FLAGS, name)   # The previous case's --config.FIELD override flags.
  run.FLAGS.unparse_flags()
  sys.argv = ["run.py", *argv]   # config_flags reads its overrides from sys.argv.
  stderr = io.StringIO()
  status, trace = 0, None
  with contextlib.redirect_stderr(stderr):
    try:
      rest = run.parse_flags(sys.argv)
      run.main(rest)
    except SystemExit as exit_:
      status = exit_.code if isinstance(exit_.code, int) else 1
    except ValidationPassed:
      status, trace = None, "validation passed"
    except BaseException:  # noqa: BLE001  (recorded: the test reports it)
      status, trace = 1, traceback.format_exc()
  return {"argv": argv, "status": status, "stderr": stderr.getvalue(), "traceback": trace}


def main() -> None:
  loop.prepare_workdir = _stop_before_writing
  cases_path, results_path = sys.argv[1:3]
  with open(cases_path) as file:
    cases = json.load(file)
  results = [_run_case(argv) for argv in cases]
  with open(results_path, "w") as file:
    json.dump(results, file)


if __name__ == "__main__":
  main()
