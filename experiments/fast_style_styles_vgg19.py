"""`experiments/fast_style_styles.py` with VGG19 features: the same three styles, one
network each, trained with the perceptual loss of torchvision's ImageNet VGG19.

The weights cannot be downloaded by cnnjax: put torchvision's `vgg19-dcbb9e9d.pth` at
`VGG19_WEIGHTS` (or edit it); a missing or malformed file stops each run with a one-line
error naming it. Then

  python run.py sweep --sweep=experiments/fast_style_styles_vgg19.py --workdir=workdirs/fast_style_vgg19
  python -m experiments.style_transfer_results --sweep_workdir=workdirs/fast_style_vgg19 \
      --gatys_network=vgg19 --weights_path=/data/vgg19-dcbb9e9d.pth \
      --out=results/style_transfer/methods_vgg19
"""

import dataclasses

from cnnjax.sweeps import Sweep
from experiments import fast_style_styles

VGG19_WEIGHTS = "/data/vgg19-dcbb9e9d.pth"


def get_sweep() -> Sweep:
  return dataclasses.replace(
      fast_style_styles.get_sweep(),
      fixed={"features.network": "vgg19", "features.weights_path": VGG19_WEIGHTS},
      description="Johnson et al.'s feed-forward style transfer with VGG19 features, one "
                  "network per style image.")
