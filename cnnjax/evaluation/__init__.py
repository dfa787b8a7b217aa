"""cnnjax.evaluation: scoring generators with an in-domain classifier.

  features   `Extractor`: a trained classifier's features and logits, over every device
             (`cnnjax.runs.classifier.load_extractor` restores one from its run).
  reference  dataset-split statistics, computed once per extractor and cached on disk.
  evaluate   `evaluate_generator`, `RunEvaluator` (what `run.py evaluate` and the
             evaluation during training compute) and `evaluate_dataset_split` (the
             score of real data: the floor).
  vae_likelihood  test-set ELBO and IWAE bounds of a VAE state over a split.

Import the submodules themselves: this package imports nothing.
"""
