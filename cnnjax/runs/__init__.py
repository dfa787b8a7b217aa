"""cnnjax.runs: the experiment registry and finished runs.

  kind       `ExperimentKind`: everything the runtime and the commands need of one kind
             of training run, declared once.
  registry   `KINDS`, `get_kind(name)`, `kind_of(config)`, `train_and_evaluate`.
  opening    `open_run(workdir, step)`: a finished run's config, program and restored
             state, as every command that reads a run gets it.
  extractors `load_extractor`: a classifier run as the feature extractor of the metrics.
  scoring    sample-quality evaluation of generative runs (during training and
             `run.py evaluate`).
  gan, vae, classifier   the kinds themselves.

Import the submodules themselves: this package imports nothing.
"""
