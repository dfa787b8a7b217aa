"""GAN ablation on `digits`: loss x spectral norm x DiffAugment, 3 seeds each.

A class-conditional DCGAN (the article's cGAN generator, a projection discriminator) on
the 4,000 training digits, 1,000 steps (a CPU budget: the 36 runs take about an hour on
2 cores), scored at the end by the in-domain classifier on 5,000 samples: FID, KID,
precision/recall and the conditional accuracy (`class_accuracy`: how often the
classifier agrees with the label a sample was generated for). Swept:

  loss:      non-saturating (the article's), hinge, WGAN-GP (Wasserstein with gradient
             penalty 10; the discriminator's BatchNorm becomes LayerNorm, as the penalty
             is per example)
  spectral norm of D: off, on
  DiffAugment (translation and cutout of everything D sees): off, on

12 settings x 3 seeds = 36 runs. The classifier must exist first:

  python run.py --config=configs/classifier.py:digits --workdir=workdirs/classifier_digits
  python run.py sweep --sweep=experiments/gan_ablation.py --workdir=workdirs/gan_ablation
  python run.py report --workdir=workdirs/gan_ablation

On a GPU, `--devices_per_run=1` runs one setting per GPU; setting vmap_seeds=True below
trains each setting's 3 seeds as one program (slower than separate runs on CPU, see
experiments/benchmarks/vmap_seeds_bench.py).
"""

from cnnjax.sweeps import Sweep, product, zipped

NUM_STEPS = 1000


def get_sweep() -> Sweep:
  return Sweep(
      config="configs/dcgan.py",
      grid=product(
          zipped({"loss.name": ["non_saturating", "hinge", "wasserstein"],
                  "loss.gp_weight": [0.0, 0.0, 10.0],
                  "model.d_norm": ["batch", "batch", "layer"]}),
          {"model.d_spectral_norm": [False, True]},
          {"train.diffaugment": ["", "translation,cutout"]}),
      seeds=[0, 1, 2],
      fixed={
          "model.g_conditioning": "concat",
          "model.d_conditioning": "projection",
          "train.num_steps": NUM_STEPS,
          "eval.every": NUM_STEPS,   # Sample quality at the last step only.
          "eval.extractor_workdir": "workdirs/classifier_digits",
          "eval.num_samples": 5000,
      },
      report_metric="fid",
      summary_metrics=("fid", "class_accuracy", "precision", "recall"),
      description="Class-conditional DCGAN on digits: which of loss, spectral norm and "
                  "DiffAugment matter for FID and conditional accuracy.",
  )
