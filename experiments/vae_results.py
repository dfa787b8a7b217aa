"""The VAE family's results page: a table, the log-likelihood curve, from finished runs.

Every number comes from the runs' own files: `likelihood.json` (test ELBO and IWAE bound,
written at the end of training), `eval.json` (`run.py evaluate`: FID, KID, precision,
recall of prior samples with the in-domain classifier) and `metrics.jsonl` (the held-out
ELBO during training). It writes `docs/results_vae.md` and
`docs/vae_likelihood_curve.png`, and checks that each IWAE bound is at least the ELBO.

  python -m experiments.vae_results [--workdirs=workdirs] [--docs=docs]
"""

import json
import math
import os
import sys

from absl import app, flags, logging

from cnnjax.io.workdir import read_json
from experiments.benchmarks.timing import machine_summary, package_versions

_WORKDIRS = flags.DEFINE_string("workdirs", "workdirs", "Folder of the runs.")
_DOCS = flags.DEFINE_string("docs", "docs", "Folder of the page and the plot.")

EXTRACTOR = "workdirs/classifier_digits"
CLASSIFIER_COMMAND = ("python3.11 run.py --config=configs/classifier.py:digits "
                      f"--workdir={EXTRACTOR}")
# (run directory, config variant, label); the sample grids are docs/vae_samples_NAME.png.
RUNS = (("vae_digits", "", "VAE"), ("vae_beta_digits", "beta", "β-VAE"),
        ("vae_cvae_digits", "cvae", "CVAE"))
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain",
            "tensorflow-datasets", "numpy")
CURVE_FILE = "vae_likelihood_curve.png"


def commands(name: str, variant: str) -> list[str]:
  """The commands that produce one run's numbers and sample grid."""
  config = "configs/vae.py" + (f":{variant}" if variant else "")
  workdir = f"workdirs/{name}"
  return [f"python3.11 run.py --config={config} --workdir={workdir}",
          f"python3.11 run.py evaluate --workdir={workdir} --extractor_workdir={EXTRACTOR} "
          "--num_samples=5000 --seed=0",
          f"python3.11 run.py sample --workdir={workdir} --num=100 --seed=0 "
          f"--out=docs/vae_samples_{variant or 'vae'}.png"]


def held_out_curve(workdir: str) -> tuple[list[int], list[float]]:
  """(steps, held-out -ELBO) of every periodic evaluation, from metrics.jsonl."""
  curve: dict[int, float] = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as file:
    for line in file:
      record = json.loads(line)
      if record.get("test_step", -1) >= 0 and "test_neg_elbo" in record:
        curve[int(record["test_step"])] = record["test_neg_elbo"]
  steps = sorted(curve)
  return steps, [curve[step] for step in steps]


def plot_curves(curves: dict[str, tuple[list[int], list[float]]], title: str,
                path: str) -> None:
  """The held-out -ELBO against the training step, one line per model."""
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot
  figure, axes = pyplot.subplots(figsize=(7, 4.2), dpi=120)
  for label, (steps, values) in curves.items():
    axes.plot(steps[1:], values[1:], marker="o", markersize=3, label=label)
  axes.set_xlabel("training step")
  axes.set_ylabel("held-out −ELBO (nats per image)")
  axes.set_title(title)
  axes.grid(alpha=0.3)
  axes.legend()
  figure.tight_layout()
  figure.savefig(path)
  pyplot.close(figure)


def _f(value: float, digits: int = 2) -> str:
  return f"{value:.{digits}f}"


def build_page(workdirs: str, docs: str) -> str:
  """The markdown page; raises if a run is missing or an IWAE bound is below its ELBO."""
  rows, details, curves, all_commands = [], [], {}, [CLASSIFIER_COMMAND]
  for name, variant, label in RUNS:
    workdir = os.path.join(workdirs, name)
    likelihood = read_json(os.path.join(workdir, "likelihood.json"))
    evaluation = read_json(os.path.join(workdir, "eval.json"))
    config = read_json(os.path.join(workdir, "config.json"))
    data_info = read_json(os.path.join(workdir, "data_info.json"))
    loss = config["loss"]
    if loss["beta"] != 1.0:
      label += f" (β = {loss['beta']:g}, KL warm-up {loss['kl_warmup_steps']} steps)"
    ll, settings = likelihood["metrics"], likelihood["settings"]
    quality, scored = evaluation["metrics"], evaluation["settings"]
    if ll["iwae_nll_nats"] > ll["neg_elbo_nats"]:
      raise ValueError(f"{name}: the IWAE bound is below the ELBO ({ll}).")
    if likelihood["step"] != evaluation["step"] or likelihood["step"] != config["train"][
        "num_steps"]:
      raise ValueError(f"{name}: likelihood.json, eval.json and the config disagree on "
                       "the step; rerun the commands.")
    run_commands = commands(name, variant)
    all_commands += run_commands
    rows.append(
        f"| {label} | {_f(-ll['neg_elbo_nats'])} ± {_f(ll['neg_elbo_nats_stderr'])} | "
        f"{_f(ll['neg_elbo_bits_per_dim'], 4)} | {_f(-ll['iwae_nll_nats'])} ± "
        f"{_f(ll['iwae_nll_nats_stderr'])} | {_f(ll['iwae_nll_bits_per_dim'], 4)} | "
        f"{_f(quality['fid'])} | {_f(quality['kid_mean'], 3)} | "
        f"{_f(quality['precision'], 3)} | {_f(quality['recall'], 3)} | "
        f"`{run_commands[0]}` |")
    extra = ""
    if config["model"]["conditional"]:
      num_classes = data_info["num_classes"]
      extra = (f"; the classifier agrees with the labels of {_f(quality['class_accuracy'], 3)}"
               " of the samples. The bounds are on log p(x | y) given the test label y; "
               f"with a uniform p(y) over the {num_classes} classes, log p(x) ≥ "
               f"log p(x | y) − ln {num_classes} ≥ "
               f"{_f(-ll['iwae_nll_nats'] - math.log(num_classes))} nats (IWAE)")
    with open(os.path.join(workdir, "metrics.jsonl")) as file:
      last = [json.loads(line) for line in file][-1]
    details.append(
        f"- **{label}** (`workdirs/{name}`): {likelihood['step']} steps of batch "
        f"{config['train']['batch_size']} (Adam, learning rate {config['optim']['lr']:g}),"
        f" {config['model']['latent_dim']} latents, widths "
        f"{config['model']['encoder_width']}/{config['model']['decoder_width']}, "
        f"{config['likelihood']['name']} likelihood"
        f"{' (dynamically binarised)' if config['likelihood']['binarize'] else ''}; "
        "training wall time "
        f"{_f(last['wall_time'], 0)} s; IWAE k = {settings['k']} over "
        f"{ll['num_examples']} {settings['split']} images; FID etc. over "
        f"{scored['num_samples']} prior samples against the {scored['num_reference']} "
        f"{scored['reference_split']} images{extra}. Samples: `docs/vae_samples_{variant or 'vae'}.png`.")
    curves[label] = held_out_curve(workdir)
  extractor_id = evaluation["settings"]["extractor_id"]
  height, width, channels = data_info["image_shape"]
  eval_config = config["eval"]
  plot_curves(curves, f"{data_info['name']}: the first {eval_config['elbo_num_examples']} "
              f"{eval_config['likelihood_split']} images, during training",
              os.path.join(docs, CURVE_FILE))
  classifier_accuracy = read_json(os.path.join(EXTRACTOR, "eval.json"))["metrics"][
      "test_accuracy"]
  floor = ""
  floor_path = os.path.join("results", "digits_train_vs_test.json")
  if os.path.exists(floor_path):
    real = read_json(floor_path)["metrics"]
    floor = (f"| real digits: the train split scored as samples (the floor) | | | | "
             f"| {_f(real['fid'])} | {_f(real['kid_mean'], 3)} | "
             f"{_f(real['precision'], 3)} | {_f(real['recall'], 3)} | "
             "`python -m experiments.real_data_floor --extractor_workdir="
             f"{EXTRACTOR} --split=train --reference_split=test "
             f"--out={floor_path}` |\n")
  grids = "\n".join(f"| {label} | ![{label}](vae_samples_{variant or 'vae'}.png) |"
                    for _, variant, label in RUNS)
  return f"""# The VAE family on digits: likelihoods and sample quality

Generated by `python -m experiments.vae_results` from the runs' `likelihood.json`,
`eval.json` and `metrics.jsonl`; no number on this page is typed in.

Models: `configs/vae.py` (convolutional encoder and decoder; details below the
table) on the `{data_info['name']}` dataset ({height}×{width}×{channels}).
Log-likelihoods are on the {settings['split']} split, in nats per image (higher is
better; ± one standard error over the images); bits/dim are the negated bounds per
dimension ({height * width * channels} per image). The ELBO is one-sample with the
analytic KL (β = 1 for every model, also the β-VAE); the IWAE bound uses
k = {settings['k']} importance samples per image, so log p(x) ≥ IWAE ≥ ELBO (checked
for every model). FID, KID, precision and recall compare prior samples (z ~ N(0, I);
the CVAE's labels balanced, sample i of class i mod K, as `run.py evaluate` draws them)
with the {scored['reference_split']} split in the
feature space of the in-domain classifier `{extractor_id}` (test accuracy
{classifier_accuracy}, `{EXTRACTOR}/eval.json`), not Inception: they compare the models
of this page, not published FIDs.

| model | test ELBO (nats) | −ELBO bits/dim | IWAE k={settings['k']} log p(x) (nats) | −IWAE bits/dim | FID | KID | precision | recall | command |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}
{floor}
{chr(10).join(details)}

## Log-likelihood over training

The held-out −ELBO (the first {eval_config['elbo_num_examples']}
{eval_config['likelihood_split']} images, fixed noise) every {eval_config['elbo_every']}
steps and at the end, from `metrics.jsonl` (`test_neg_elbo` at `test_step`; step 0
left out):

![held-out -ELBO during training]({CURVE_FILE})

## Prior samples

`run.py sample --num=100 --seed=0`: a CVAE grid has one class per row (row r is digit
r; the labels of `run.py sample` are `grid_labels`: row r of the ceil(sqrt(N))-wide grid
is class r mod K).

| model | samples |
| --- | --- |
{grids}

## Machine and versions

- {machine_summary()}; JAX on CPU (one device), the machine shared with other jobs.
- {package_versions(PACKAGES)}.

## Commands

In this order, from the repository root (the classifier first; each training run ends
by writing its `likelihood.json`, which `python run.py likelihood
--workdir=DIR --num_importance={settings['k']}` recomputes):

```bash
{chr(10).join(all_commands)}
python -m experiments.vae_results
```
"""


def main(argv: list[str]) -> None:
  del argv
  try:
    page = build_page(_WORKDIRS.value, _DOCS.value)
  except (OSError, KeyError, ValueError) as error:
    sys.stderr.write(f"error: {' '.join(str(error).split())}; run the commands in "
                     "this script's docstring first.\n")
    sys.exit(2)
  path = os.path.join(_DOCS.value, "results_vae.md")
  with open(path, "w") as file:
    file.write(page)
  logging.info("Wrote %s and %s.", path, os.path.join(_DOCS.value, CURVE_FILE))


if __name__ == "__main__":
  app.run(main)
