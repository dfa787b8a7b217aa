"""`run.py report`: a sweep's results as tables and plots.

For every setting (grid point) it aggregates the finished runs' seeds: the final value
of each metric in `metrics.jsonl` (and of `eval.json` / `likelihood.json`, when a run
has them, as `eval.NAME` / `likelihood.NAME`) and its best value over training (for the
metrics with a better direction: FID down, accuracy up, ...), as mean ± std (sample
standard deviation, over seeds). It writes

  DIR/report.md              the tables, the runs' status, the plots
  DIR/report.csv             one row per setting: swept values, seeds, every statistic
  DIR/report_curves.png      metric curves per setting (mean over seeds, min-max band)
  DIR/report_ablation.png    the report metric's final value per setting (± std)

The runs are those of `DIR/sweep.json` (or, without it, every run directory in DIR).
"""

import csv
import dataclasses
import json
import math
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import logging

from cnnjax.errors import ConfigError, WorkdirError
from cnnjax.io.workdir import CONFIG_FILE, read_json
from cnnjax.sweeps.manifest import MANIFEST_FILE, METRICS_FILE, is_finished

EXTRA_RESULT_FILES = {"eval": "eval.json", "likelihood": "likelihood.json"}
# Logged quantities that are not results: no statistics, no curves.
_NOT_RESULTS = re.compile(r"(^|\.)(steps_per_sec|wall_time|test_step|num_examples|beta|"
                          r"step|checkpoint_step)$")
# Details left out of the markdown table and the curves (kept in the CSV).
_DETAILS = re.compile(r"(_std|_stderr|class_accuracy_\d+|_\d+)$")
_LOWER_IS_BETTER = re.compile(r"(^|[._])(fid|kid_mean|neg_elbo\w*|iwae_nll\w*|"
                              r"bits_per_dim|reconstruction|c2st_accuracy|nll\w*)$|"
                              r"^(test_)?loss$")
_HIGHER_IS_BETTER = re.compile(r"(^|[._])(class_accuracy|accuracy|test_accuracy|precision|"
                               r"recall|density|coverage|is_mean|log_px\w*)$")
DEFAULT_REPORT_METRICS = ("eval.fid", "fid", "likelihood.neg_elbo_nats", "test_neg_elbo",
                          "class_accuracy", "eval.class_accuracy", "test_accuracy",
                          "neg_elbo", "g_loss", "loss")


def better(metric: str) -> str | None:
  """"min" or "max" when a lower or higher value of `metric` is better, else None."""
  if _LOWER_IS_BETTER.search(metric):
    return "min"
  if _HIGHER_IS_BETTER.search(metric):
    return "max"
  return None


@dataclasses.dataclass
class RunResult:
  """One run's curves and final values."""
  name: str
  setting: str
  seed: int | None
  status: str
  curves: dict[str, tuple[list[int], list[float]]]
  final: dict[str, float]


def _read_metrics(path: str) -> dict[str, tuple[list[int], list[float]]]:
  curves: dict[str, tuple[list[int], list[float]]] = {}
  if not os.path.isfile(path):
    return curves
  with open(path) as file:
    for line in file:
      if not line.strip():
        continue
      record = json.loads(line)
      step = int(record.pop("step"))
      # Held-out metrics (test_*) are logged with the step they were computed at
      # (test_step): their curves use it, once per computation.
      test_step = record.get("test_step")
      for name, value in record.items():
        if isinstance(value, (int, float)) and not _NOT_RESULTS.search(name):
          at = int(test_step) if test_step is not None and name.startswith("test_") else step
          steps, values = curves.setdefault(name, ([], []))
          if steps and steps[-1] == at:
            continue
          steps.append(at)
          values.append(float(value))
  return curves


def read_run(run_dir: str, name: str, setting: str, seed: int | None,
             status: str) -> RunResult:
  """A run's metrics.jsonl curves and final values (plus eval.json, likelihood.json)."""
  curves = _read_metrics(os.path.join(run_dir, METRICS_FILE))
  final = {metric: values[-1] for metric, (_, values) in curves.items()}
  for prefix, file_name in EXTRA_RESULT_FILES.items():
    path = os.path.join(run_dir, file_name)
    if os.path.isfile(path):
      for metric, value in read_json(path).get("metrics", {}).items():
        if isinstance(value, (int, float)) and not _NOT_RESULTS.search(metric):
          final[f"{prefix}.{metric}"] = float(value)
  return RunResult(name=name, setting=setting, seed=seed, status=status, curves=curves,
                   final=final)


def _setting_of(name: str) -> str:
  setting = re.sub(r",?seed=-?\d+$", "", name)
  return setting or "base"


def collect_runs(workdir: str) -> tuple[dict[str, Any], list[RunResult]]:
  """The sweep's manifest (or {}) and every run's results.

  Raises:
    WorkdirError: `workdir` holds no sweep and no runs.
  """
  manifest_path = os.path.join(workdir, MANIFEST_FILE)
  if os.path.isfile(manifest_path):
    manifest = read_json(manifest_path)
    return manifest, [read_run(os.path.join(workdir, entry["name"]), entry["name"],
                               entry["setting"], entry.get("seed"), entry["status"])
                      for entry in manifest["runs"]]
  runs = []
  for name in sorted(os.listdir(workdir) if os.path.isdir(workdir) else []):
    config_path = os.path.join(workdir, name, CONFIG_FILE)
    if os.path.isfile(config_path):
      config = read_json(config_path)
      done = is_finished(os.path.join(workdir, name), config["train"]["num_steps"])
      runs.append(read_run(os.path.join(workdir, name), name, _setting_of(name),
                           config.get("seed"), "finished" if done else "unfinished"))
  if not runs:
    raise WorkdirError(f"{workdir} holds no sweep ({MANIFEST_FILE}) and no runs; run "
                       "python run.py sweep --sweep=experiments/NAME.py first.")
  return {}, runs


def _mean_std(values: list[float]) -> tuple[float, float]:
  array = np.asarray(values, dtype=np.float64)
  return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else math.nan


@dataclasses.dataclass
class SettingSummary:
  """Statistics over the finished seeds of one setting."""
  setting: str
  overrides: dict[str, Any]
  num_runs: int
  num_finished: int
  final: dict[str, tuple[float, float]]   # metric -> (mean, std)
  best: dict[str, tuple[float, float]]


def summarise(manifest: dict[str, Any], runs: list[RunResult]) -> list[SettingSummary]:
  """One `SettingSummary` per setting, in sweep order, over its finished runs."""
  overrides = {entry["setting"]: entry.get("overrides", {})
               for entry in manifest.get("runs", [])}
  by_setting: dict[str, list[RunResult]] = {}
  for run in runs:
    by_setting.setdefault(run.setting, []).append(run)
  summaries = []
  for setting, members in by_setting.items():
    finished = [run for run in members if run.status == "finished"]
    metrics = sorted({metric for run in finished for metric in run.final})
    final, best = {}, {}
    for metric in metrics:
      values = [run.final[metric] for run in finished if metric in run.final]
      final[metric] = _mean_std(values)
      direction = better(metric)
      curves = [run.curves[metric][1] for run in finished if metric in run.curves]
      if direction and curves:
        pick = min if direction == "min" else max
        best[metric] = _mean_std([pick(curve) for curve in curves])
      elif direction:
        best[metric] = final[metric]
    summaries.append(SettingSummary(setting=setting, overrides=overrides.get(setting, {}),
                                    num_runs=len(members), num_finished=len(finished),
                                    final=final, best=best))
  return summaries


def _format(stat: tuple[float, float] | None) -> str:
  if stat is None:
    return ""
  mean, std = stat
  return f"{mean:.4g}" if math.isnan(std) else f"{mean:.4g} ± {std:.2g}"


def _markdown_table(summaries: list[SettingSummary], metrics: list[str],
                    kind: str) -> list[str]:
  lines = ["| setting | seeds | " + " | ".join(metrics) + " |",
           "| --- | --- | " + " | ".join("---" for _ in metrics) + " |"]
  for summary in summaries:
    stats = summary.final if kind == "final" else summary.best
    cells = [_format(stats.get(metric)) for metric in metrics]
    lines.append(f"| {summary.setting} | {summary.num_finished}/{summary.num_runs} | "
                 + " | ".join(cells) + " |")
  return lines


def write_csv(path: str, summaries: list[SettingSummary]) -> None:
  """One row per setting: its swept values, seeds, and every metric's statistics."""
  fields = list(dict.fromkeys(field for summary in summaries for field in summary.overrides))
  metrics = sorted({metric for summary in summaries for metric in summary.final})
  header = ["setting", *fields, "num_runs", "num_finished"]
  for metric in metrics:
    header += [f"{metric}_final_mean", f"{metric}_final_std", f"{metric}_best_mean",
               f"{metric}_best_std"]
  with open(path, "w", newline="") as file:
    writer = csv.writer(file)
    writer.writerow(header)
    for summary in summaries:
      row = [summary.setting, *(summary.overrides.get(field, "") for field in fields),
             summary.num_runs, summary.num_finished]
      for metric in metrics:
        for stats in (summary.final, summary.best):
          mean, std = stats.get(metric, (math.nan, math.nan))
          row += ["" if math.isnan(mean) else f"{mean:.6g}",
                  "" if math.isnan(std) else f"{std:.6g}"]
      writer.writerow(row)


def pick_report_metric(summaries: list[SettingSummary], requested: str = "") -> str | None:
  """The bar chart's metric: the sweep's `report_metric`, else the first known one."""
  available = {metric for summary in summaries for metric in summary.final}
  if requested:
    if requested in available:
      return requested
    logging.warning("The sweep's report_metric %r is in no finished run; picking "
                    "another.", requested)
  for metric in DEFAULT_REPORT_METRICS:
    if metric in available:
      return metric
  return min(available) if available else None


def _curve_metrics(runs: list[RunResult]) -> list[str]:
  """Metrics with a curve (two or more logged steps) in a finished run."""
  return sorted({metric for run in runs if run.status == "finished"
                 for metric, (steps, _) in run.curves.items()
                 if len(steps) > 1 and not _DETAILS.search(metric)
                 and metric != "nonfinite_steps"})


def plot_curves(path: str, runs: list[RunResult], summaries: list[SettingSummary],
                metrics: list[str]) -> None:
  """One panel per metric: per setting, the mean over seeds and the min-max band."""
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  columns = min(3, max(1, len(metrics)))
  rows = math.ceil(len(metrics) / columns)
  figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.4 * rows),
                              squeeze=False)
  for axis, metric in zip(axes.flat, metrics):
    for summary in summaries:
      curves = [run.curves[metric] for run in runs if run.setting == summary.setting
                and run.status == "finished" and metric in run.curves]
      if not curves:
        continue
      steps = sorted(set.intersection(*(set(curve[0]) for curve in curves)))
      values = np.asarray([[dict(zip(*curve))[step] for step in steps]
                           for curve in curves])
      line, = axis.plot(steps, values.mean(axis=0), marker=".", label=summary.setting)
      if len(curves) > 1:
        axis.fill_between(steps, values.min(axis=0), values.max(axis=0), alpha=0.2,
                          color=line.get_color())
    axis.set_title(metric)
    axis.set_xlabel("step")
  for axis in list(axes.flat)[len(metrics):]:
    axis.axis("off")
  handles, labels = axes.flat[0].get_legend_handles_labels()
  if handles:
    figure.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)),
                  fontsize="small", bbox_to_anchor=(0.5, 0.0))
  figure.tight_layout(rect=(0, 0.04 + 0.025 * math.ceil(len(labels) / 3), 1, 1))
  figure.savefig(path, dpi=100)
  plt.close(figure)


def plot_ablation(path: str, summaries: list[SettingSummary], metrics: list[str]) -> None:
  """Horizontal bars, one panel per metric: its final mean per setting, ± std."""
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  shown = [summary for summary in summaries
           if any(metric in summary.final for metric in metrics)]
  figure, axes = plt.subplots(1, len(metrics), sharey=True, squeeze=False,
                              figsize=(5 + 3.5 * len(metrics), 1.0 + 0.45 * len(shown)))
  positions = np.arange(len(shown))
  for axis, metric in zip(axes.flat, metrics):
    stats = [summary.final.get(metric, (math.nan, math.nan)) for summary in shown]
    means = [mean for mean, _ in stats]
    stds = [0.0 if math.isnan(std) else std for _, std in stats]
    axis.barh(positions, means, xerr=stds, capsize=3, color="tab:blue", alpha=0.8)
    direction = better(metric)
    hint = {"min": " (lower is better)", "max": " (higher is better)"}.get(direction, "")
    axis.set_xlabel(f"final {metric}{hint}\nmean ± std over seeds")
  axes.flat[0].set_yticks(positions, [summary.setting for summary in shown],
                          fontsize="small")
  axes.flat[0].invert_yaxis()
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def summary_metrics(summaries: list[SettingSummary], requested: Sequence[str],
                    fallback: str | None) -> list[str]:
  """The summary's metrics: those `requested` that some finished run has (a warning
  names the others), else `fallback` (the report metric) alone."""
  available = {metric for summary in summaries for metric in summary.final}
  missing = [metric for metric in requested if metric not in available]
  if missing:
    logging.warning("No finished run has the summary metric(s) %s.", ", ".join(missing))
  chosen = [metric for metric in requested if metric in available]
  return chosen or ([fallback] if fallback else [])


def write_report(workdir: str, metrics: Sequence[str] = ()) -> str:
  """Writes the report files of the sweep in `workdir`; returns a summary of them.

  Args:
    workdir: the sweep's directory (`run.py sweep --workdir`).
    metrics: the summary table's and bar charts' metrics; empty: the sweep's
      `summary_metrics`, else its `report_metric`.
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  manifest, runs = collect_runs(workdir)
  summaries = summarise(manifest, runs)
  csv_path = os.path.join(workdir, "report.csv")
  write_csv(csv_path, summaries)
  if metrics:  # Asked for on the command line: a typo is an error, before any writing.
    available = {metric for summary in summaries for metric in summary.final}
    unknown = [metric for metric in metrics if metric not in available]
    if unknown:
      raise ConfigError(f"--metrics names {', '.join(unknown)}, which no finished run "
                        f"of {workdir} has; available: {', '.join(sorted(available))}.")
  report_metric = pick_report_metric(summaries, manifest.get("report_metric", ""))
  headline = summary_metrics(
      summaries, list(metrics) or manifest.get("summary_metrics", []), report_metric)
  curve_metrics = _curve_metrics(runs)
  images = {}
  try:
    if curve_metrics:
      images["curves"] = os.path.join(workdir, "report_curves.png")
      plot_curves(images["curves"], runs, summaries, curve_metrics)
    if headline:
      images["ablation"] = os.path.join(workdir, "report_ablation.png")
      plot_ablation(images["ablation"], summaries, headline)
  except ImportError:
    logging.warning("No plots: matplotlib is not installed (pip install -r "
                    "requirements.txt).")
    images = {}
  table_metrics = sorted({metric for summary in summaries for metric in summary.final
                          if not _DETAILS.search(metric)})
  result_metrics = [metric for metric in table_metrics if better(metric)]
  if report_metric in result_metrics:  # The report metric leads.
    result_metrics.remove(report_metric)
    result_metrics.insert(0, report_metric)
  diagnostics = [metric for metric in table_metrics if metric not in result_metrics]
  title = manifest.get("name") or os.path.basename(workdir)
  lines = [f"# Sweep {title}", ""]
  if manifest.get("description"):
    lines += [manifest["description"], ""]
  if manifest:
    lines += [f"Config `{manifest.get('config')}`, seeds {manifest.get('seeds')}"
              f"{', vectorised (jax.vmap)' if manifest.get('vmap_seeds') else ''}; "
              f"reproduce with `python run.py sweep --sweep={manifest.get('sweep')} "
              f"--workdir=DIR`, then `python run.py report --workdir=DIR`.", ""]
  if headline:
    lines += ["## Summary: final values (mean ± std over finished seeds)", "",
              *_markdown_table(summaries, headline, "final"), ""]
  if result_metrics:
    lines += ["## Results: final values (mean ± std over finished seeds)", "",
              *_markdown_table(summaries, result_metrics, "final"), "",
              "## Results: best values during training (mean ± std over finished seeds)",
              "", *_markdown_table(summaries, result_metrics, "best"), ""]
  if diagnostics:
    lines += ["## Training diagnostics: final values (mean ± std over finished seeds)",
              "", *_markdown_table(summaries, diagnostics, "final"), ""]
  for key, caption in (("ablation", f"Final {', '.join(headline)} per setting"),
                       ("curves", "Curves per setting (mean over seeds, min-max band)")):
    if key in images:
      lines += [f"## {caption}", "", f"![{caption}]({os.path.basename(images[key])})", ""]
  lines += ["## Runs", "", "| run | status | error |", "| --- | --- | --- |"]
  errors = {entry["name"]: entry.get("error") or "" for entry in manifest.get("runs", [])}
  for run in runs:
    error = errors.get(run.name, "").replace("|", "\\|")
    lines.append(f"| {run.name} | {run.status} | {error} |")
  markdown_path = os.path.join(workdir, "report.md")
  with open(markdown_path, "w") as file:
    file.write("\n".join(lines) + "\n")
  written = [markdown_path, csv_path, *images.values()]
  summary_table = _markdown_table(summaries, headline, "final")
  return "\n".join(["Wrote " + ", ".join(written), *summary_table])
