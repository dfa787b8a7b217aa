"""pix2pix's Table 1 ablation on `shape_pairs` (outline -> filled shape): L1 only, cGAN
only, L1 + cGAN, 3 seeds each.

configs/pix2pix.py (U-Net, 34x34 PatchGAN at 32 px, vanilla GAN loss, lambda_L1 = 100)
with its loss weights swept as the paper's rows: `lambda_gan` 0 (L1 only), `lambda_l1`
0 (cGAN only), both (L1 + cGAN). Each run is scored on the test split at the end
(`eval.json`: L1, PSNR, SSIM against the ground truth; FID / KID of the translations
against real targets and the task score with a classifier of filled shapes, the target
domain). 9 runs, a shortened CPU budget (NUM_STEPS below):

  python run.py --config=configs/classifier.py --workdir=workdirs/classifier_filled --config.data.name=shape_domains/filled --config.data.image_size=32
  python run.py sweep --sweep=experiments/pix2pix_ablation.py --workdir=workdirs/pix2pix_ablation
  python run.py report --workdir=workdirs/pix2pix_ablation
"""

from cnnjax.sweeps import Sweep, zipped

NUM_STEPS = 600


def get_sweep() -> Sweep:
  return Sweep(
      config="configs/pix2pix.py",
      grid=zipped({"loss.lambda_gan": [0.0, 1.0, 1.0],
                   "loss.lambda_l1": [100.0, 0.0, 100.0]}),
      seeds=[0, 1, 2],
      fixed={
          "train.num_steps": NUM_STEPS,
          "optim.constant_steps": NUM_STEPS // 2,
          "optim.decay_steps": NUM_STEPS // 2,
          "eval.extractor_workdir": "workdirs/classifier_filled",
      },
      report_metric="eval.task_accuracy",
      summary_metrics=("eval.l1", "eval.psnr", "eval.ssim", "eval.fid",
                       "eval.task_accuracy"),
      description="pix2pix on shape_pairs: what the L1 and cGAN terms each contribute "
                  "(the paper's Table 1).",
  )
