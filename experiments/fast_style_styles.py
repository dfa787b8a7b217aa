"""Fast style transfer (Johnson et al. 2016), one network per style image: the README's
content x style grid of feed-forward results.

configs/fast_style.py (random-weight features, `photo_crops` at 64 px) with
`style_image` swept over three of scikit-image's bundled images: the coffee cup (the
default), the colour wheel and the gravel texture. One seed each; every run logs its
content, style and total variation terms (`report.md`):

  python run.py sweep --sweep=experiments/fast_style_styles.py --workdir=workdirs/fast_style_styles
  python run.py report --workdir=workdirs/fast_style_styles
  python run.py stylize --workdir=workdirs/fast_style_styles/style_image=skimage:coffee \
      --content=skimage:astronaut,skimage:chelsea --size=128 --out=stylized/fast_coffee
"""

from cnnjax.sweeps import Sweep, product

STYLES = ("skimage:coffee", "skimage:colorwheel", "skimage:gravel")


def get_sweep() -> Sweep:
  return Sweep(
      config="configs/fast_style.py",
      grid=product({"style_image": list(STYLES)}),
      seeds=[0],
      report_metric="loss",
      summary_metrics=("loss", "content", "style", "tv"),
      description="Johnson et al.'s feed-forward style transfer, one network per style "
                  "image.",
  )
