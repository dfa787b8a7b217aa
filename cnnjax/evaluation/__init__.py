"""cnnjax.evaluation: scoring generators with an in-domain classifier.

  features   `Extractor`: a trained classifier's features and logits, over every device.
  reference  dataset-split statistics, computed once per extractor and cached on disk.
  evaluate   `evaluate_generator`, `evaluate_run` (`run.py evaluate`) and
             `evaluate_dataset_split` (the score of real data: the floor).
  vae_likelihood  test-set ELBO and IWAE bounds of a trained VAE.

Import the submodules themselves; this package imports nothing, since the classifier's
training loop imports `features`.
"""
