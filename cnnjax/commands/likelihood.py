"""`run.py likelihood`: the test-set ELBO and IWAE bound of a VAE run."""

from absl import flags

from cnnjax.commands import common

NAME = "likelihood"
USAGE = """\
  likelihood  The test-set ELBO and IWAE bound on log p(x) of a VAE run, in nats and
          bits per dimension, into DIR/likelihood.json:
            python run.py likelihood --workdir=DIR [--num_importance=1000] [--split=test]
              [--seed=0] [--step=N]"""

NUM_IMPORTANCE = flags.DEFINE_integer("num_importance", None, "likelihood: IWAE samples "
                                      "k (default: the run's eval.num_importance).")


def main() -> None:
  workdir = common.required_workdir()
  from cnnjax.runs.outputs import likelihood_run  # Imports jax: after flag errors.
  likelihood_run(workdir, split=common.SPLIT.value or "test",
                 num_importance=NUM_IMPORTANCE.value,
                 seed=common.SEED.value, step=common.STEP.value)
