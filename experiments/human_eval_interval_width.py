"""How many raters and judgments give what interval width in a HYPE-infinity study.

  python experiments/human_eval_interval_width.py --error_rate=0.3 --rater_sd=0.1

Simulated raters: each rater's own error rate is drawn around --error_rate (a normal of
sd --rater_sd, clipped to [0.01, 0.99]: raters differ), each judgment is wrong with that
rate. For every (raters, judgments per rater) the 95% bootstrap interval over raters is
computed exactly as `run.py human_eval --report` does it
(cnnjax.human_eval.scores.bootstrap_over_raters, 10,000 resamples), over --repeats
simulated studies; the table gives the mean width and how often the interval held the
true mean rate.
"""

import os
import sys

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cnnjax.human_eval.scores import bootstrap_over_raters  # noqa: E402

ERROR_RATE = flags.DEFINE_float("error_rate", 0.3, "True mean error rate of the raters.")
RATER_SD = flags.DEFINE_float("rater_sd", 0.1, "Spread of the raters' own error rates.")
REPEATS = flags.DEFINE_integer("repeats", 50, "Simulated studies per cell.")
RATERS = flags.DEFINE_list("raters", ["5", "10", "20", "40"], "Raters per study.")
JUDGMENTS = flags.DEFINE_list("judgments", ["20", "50", "100"], "Judgments per rater.")


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  judgments = [int(j) for j in JUDGMENTS.value]
  lines = [f"True error rate {ERROR_RATE.value}, rater sd {RATER_SD.value}, "
           f"{REPEATS.value} studies per cell: mean 95% interval width (coverage).",
           "raters \\ judgments per rater  " + "".join(f"{j:>16}" for j in judgments)]
  for num_raters in (int(r) for r in RATERS.value):
    cells = []
    for per_rater in judgments:
      widths, covered = [], 0
      for repeat in range(REPEATS.value):
        rates = np.clip(rng.normal(ERROR_RATE.value, RATER_SD.value, num_raters),
                        0.01, 0.99)
        errors = rng.binomial(per_rater, rates)
        low, high = bootstrap_over_raters(errors, np.full(num_raters, per_rater),
                                          seed=repeat)
        widths.append(high - low)
        covered += low <= ERROR_RATE.value <= high
      cells.append(f"{100 * np.mean(widths):6.1f} pts ({covered / REPEATS.value:4.0%})")
    lines.append(f"{num_raters:>29}  " + "".join(f"{c:>16}" for c in cells))
  print("\n".join(lines))   # The script's result: a table on stdout.


if __name__ == "__main__":
  app.run(main)
