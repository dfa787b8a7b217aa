"""`run.py report`: tables and plots of a finished sweep."""

from absl import flags

from cnnjax.commands import common

NAME = "report"
USAGE = """\
  report  Tables (DIR/report.md, DIR/report.csv) and plots of a finished sweep:
            python run.py report --workdir=DIR [--metrics=fid,class_accuracy]
          --metrics: the summary table's and bar charts' metrics (default: the
          sweep's summary_metrics, else its report_metric)."""

METRICS = flags.DEFINE_list("metrics", None, "report: metrics of the summary table and bar "
                            "charts, e.g. fid,class_accuracy (default: the sweep's "
                            "summary_metrics).")


def main() -> None:
  workdir = common.required_workdir()
  from cnnjax.sweeps.report import write_report
  print(write_report(workdir, METRICS.value or ()))
