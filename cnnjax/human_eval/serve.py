"""Running a study (`run.py human_eval`) and reporting it (`run.py human_eval --report`)."""

import os
import socket
from typing import Any

from absl import logging
from werkzeug.serving import make_server

from cnnjax.errors import ConfigError
from cnnjax.human_eval.app import create_app
from cnnjax.human_eval.scores import study_scores
from cnnjax.human_eval.study import StudySettings, create_study, open_study
from cnnjax.io.workdir import write_json_atomic

REPORT_FILE = "human_eval.json"


def make_study_server(workdir: str, settings: StudySettings, *, host: str, port: int):
  """Creates (or reopens) the study and a WSGI server for it, not yet serving.

  Raises:
    ConfigError: the port cannot be bound; and the errors of `create_study`.
  """
  try:   # werkzeug exits the process on a taken port: probe it first.
    socket.create_server((host, port)).close()
  except OSError as error:
    raise ConfigError(f"Cannot serve on {host}:{port} ({error.strerror or error}); pass "
                      "another --port or --host.") from None
  study = create_study(workdir, settings)
  return make_server(host, port, create_app(study), threaded=True)


def serve_study(workdir: str, settings: StudySettings, *, host: str, port: int) -> None:
  """Serves the study until Ctrl-C (every judgment is already stored when it returns)."""
  server = make_study_server(workdir, settings, host=host, port=port)
  logging.info("Human evaluation of %s: open http://%s:%d/ (Ctrl-C to stop).", workdir,
               host, server.server_port)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    logging.info("Stopped; rerun the same command to continue the study.")
  finally:
    server.server_close()


def report_study(workdir: str, *, seed: int = 0) -> dict[str, Any]:
  """Scores the study of `workdir` and writes `DIR/human_eval.json`.

  Raises:
    ConfigError: the run has no study, or the study has no judgment yet.
  """
  study = open_study(workdir)
  judgments = study.store.judgments()
  if not judgments:
    raise ConfigError(f"The study of {workdir} has no judgment yet; share its page "
                      "first (python run.py human_eval --workdir=DIR).")
  scores = study_scores(judgments, qualification_threshold=float(
      study.settings["qualification_threshold"]), seed=seed)
  result = {"settings": study.settings, "num_images": len(study.store.images()),
            **scores}
  write_json_atomic(os.path.join(os.path.abspath(workdir), REPORT_FILE), result)
  return result


def describe(result: dict[str, Any]) -> str:
  """The report's lines for the terminal."""
  def line(name, pooled):
    low, high = pooled["ci95"]
    return (f"{name:<28} {100 * pooled['error_rate']:6.1f}%  "
            f"[{100 * low:5.1f}, {100 * high:5.1f}]  ({pooled['judgments']} judgments)")
  pooled = result["pooled"]
  lines = [f"HYPE-infinity error rate (50% = indistinguishable), 95% bootstrap CI over "
           f"{len(result['qualified_raters'])} raters ({result['num_resamples']} "
           "resamples):", line("all images", pooled["all"]),
           line("real images judged fake", pooled["real"]),
           line("fakes judged real", pooled["fake"])]
  for source, by_run in pooled.get("fake_by_run", {}).items():
    lines.append(line(f"fakes of {os.path.basename(source)}", by_run))
  if result["excluded_raters"]:
    lines.append(f"Excluded by the qualification block: {', '.join(result['excluded_raters'])}")
  return "\n".join(lines)
