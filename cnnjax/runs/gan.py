"""The `gan` kind: the GAN family of `configs/dcgan.py` and its recipes (DCGAN, SNGAN,
cGANs, WGAN-GP, LSGAN, ...). Samples come from the generator (its EMA when kept);
`run.py evaluate` scores their sample quality.
"""

import ml_collections

from cnnjax.runs.kind import ExperimentKind
from cnnjax.runs.scoring import evaluate_generative_run, make_training_evaluator, sample_prior
from cnnjax.train.gan_program import GanProgram, build_gan_program
from cnnjax.train.validation import validate_gan_config


def _build_program(config: ml_collections.ConfigDict, *, mesh, data_info: dict
                   ) -> GanProgram:
  return build_gan_program(config, mesh=mesh, channels=data_info["image_shape"][-1],
                           num_classes=data_info["num_classes"])


KIND = ExperimentKind(
    name="gan",
    summary="a GAN (DCGAN, SNGAN, conditional GANs; configs/dcgan.py and its recipes)",
    config_hint="python run.py --config=configs/dcgan.py --workdir=DIR",
    validate=validate_gan_config,
    build_program=_build_program,
    make_evaluator=make_training_evaluator,
    sample=sample_prior,
    evaluate=evaluate_generative_run,
)
