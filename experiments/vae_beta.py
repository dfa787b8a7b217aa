"""β-VAE sweep on `digits`: β ∈ {0.5, 1, 2, 4, 8}, 3 seeds each.

The convolutional VAE of configs/vae.py (Bernoulli likelihood, dynamically binarised
digits, 1,000 steps: a CPU budget of about 1.5 minutes a run) with the KL term weighted
by β. The runs log the training ELBO with its KL and reconstruction terms and the
held-out ELBO (metrics.jsonl), write the test ELBO and
IWAE bound at the end (likelihood.json, k = 100), and score prior samples with the
in-domain classifier at the last step (FID, KID, precision/recall). 15 runs:

  python run.py --config=configs/classifier.py:digits --workdir=workdirs/classifier_digits
  python run.py sweep --sweep=experiments/vae_beta.py --workdir=workdirs/vae_beta
  python run.py report --workdir=workdirs/vae_beta
"""

from cnnjax.sweeps import Sweep, product

NUM_STEPS = 1000


def get_sweep() -> Sweep:
  return Sweep(
      config="configs/vae.py",
      grid=product({"loss.beta": [0.5, 1.0, 2.0, 4.0, 8.0]}),
      seeds=[0, 1, 2],
      fixed={
          "train.num_steps": NUM_STEPS,
          "eval.every": NUM_STEPS,   # Sample quality at the last step only.
          "eval.extractor_workdir": "workdirs/classifier_digits",
          "eval.num_samples": 5000,
          "eval.num_importance": 100,
      },
      report_metric="test_neg_elbo",
      # kl and reconstruction: nats per image on the last training batch.
      summary_metrics=("test_neg_elbo", "likelihood.iwae_nll_nats", "kl",
                       "reconstruction", "fid"),
      description="β-VAE on digits: the trade-off between reconstruction, KL and sample "
                  "quality as β grows.",
  )
