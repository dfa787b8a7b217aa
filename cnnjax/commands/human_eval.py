"""`run.py human_eval`: a local web study of real-vs-generated judgments, and its report."""

from absl import flags

from cnnjax.commands import common

NAME = "human_eval"
USAGE = """\
  human_eval  Serve a web page asking people "real or fake?" about a run's samples and
          its dataset's images (HYPE-infinity), storing every judgment in
          DIR/human_eval/study.sqlite; then score it with bootstrap intervals:
            python run.py human_eval --workdir=DIR [--port=8765] [--host=127.0.0.1]
              [--num_real=50 --num_fake=50] [--num_qualification=0] [--split=test]
              [--compare_workdir=OTHER_RUN]
            python run.py human_eval --workdir=DIR --report   (writes DIR/human_eval.json)
          A restarted server continues the same study."""

PORT = flags.DEFINE_integer("port", 8765, "human_eval: the port to serve on.")
HOST = flags.DEFINE_string("host", "127.0.0.1", "human_eval: the address to bind (the "
                           "default serves this machine only; 0.0.0.0 the local network).")
NUM_REAL = flags.DEFINE_integer("num_real", 50, "human_eval: real images per rater.")
NUM_FAKE = flags.DEFINE_integer("num_fake", 50, "human_eval: generated images per rater.")
NUM_QUALIFICATION = flags.DEFINE_integer(
    "num_qualification", 0, "human_eval: images shown first, half real, not scored; a "
    "rater below --qualification_threshold accuracy on them is left out of the score.")
QUALIFICATION_THRESHOLD = flags.DEFINE_float(
    "qualification_threshold", 0.5, "human_eval: accuracy needed on the qualification "
    "block, in [0, 1].")
COMPARE_WORKDIR = flags.DEFINE_string(
    "compare_workdir", None, "human_eval: a second run whose samples make half of the "
    "fakes (A/B: each run's fakes judged real get their own score).")
REPORT = flags.DEFINE_boolean("report", False, "human_eval: print the study's scores and "
                              "write DIR/human_eval.json instead of serving.")


def _settings():
  if not 1 <= PORT.value <= 65535:
    common.fail(f"--port must be in 1..65535, got {PORT.value}.")
  for flag in (NUM_REAL, NUM_FAKE):
    if flag.value <= 0:
      common.fail(f"--{flag.name} must be positive, got {flag.value}.")
  if NUM_QUALIFICATION.value < 0:
    common.fail(f"--num_qualification must be >= 0, got {NUM_QUALIFICATION.value}.")
  if not 0 <= QUALIFICATION_THRESHOLD.value <= 1:
    common.fail("--qualification_threshold must be in [0, 1], got "
                f"{QUALIFICATION_THRESHOLD.value}.")
  return dict(num_real=NUM_REAL.value, num_fake=NUM_FAKE.value,
              num_qualification=NUM_QUALIFICATION.value,
              qualification_threshold=QUALIFICATION_THRESHOLD.value,
              split=common.SPLIT.value or "test", seed=common.SEED.value,
              compare_workdir=COMPARE_WORKDIR.value or "")


def main() -> None:
  workdir = common.required_workdir()
  settings = _settings()
  from cnnjax.human_eval import serve  # Imports jax: after flag errors.
  if REPORT.value:
    print(serve.describe(serve.report_study(workdir, seed=common.SEED.value)))
    return
  serve.serve_study(workdir, serve.StudySettings(**settings), host=HOST.value,
                    port=PORT.value)
