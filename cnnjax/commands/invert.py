"""`run.py invert`: GAN inversion of real images (optimisation, encoder, hybrid),
scored (PSNR / SSIM, feature distance) and timed, into --out_dir."""

from absl import flags

from cnnjax.commands import common, projector_flags

NAME = "invert"
USAGE = """\
  invert  Invert real images into a GAN run's latent space into --out_dir
          (invert.png: target | G(z) of each method; invert.json: PSNR, SSIM, feature
          distance and seconds per image of each method):
            python run.py invert --workdir=GAN_RUN --out_dir=DIR
              [--inversion=optimize,encoder,hybrid] [--encoder_workdir=ENCODER_RUN]
              [--extractor_workdir=CLASSIFIER | --feature_weight=0]
              [--num_images=16] [--split=test | --images=A.png,B.png]
          optimize: the projector from z = 0; encoder: E(x) of a gan_encoder run
          (configs/gan_encoder.py); hybrid: E(x), then the projector with the
          encoder regulariser (--encoder_weight, default 2)."""

INVERSION = flags.DEFINE_list("inversion", ["optimize"], "invert: comma-separated "
                              "methods, of optimize, encoder, hybrid.")
ENCODER_WORKDIR = flags.DEFINE_string("encoder_workdir", None, "invert: a gan_encoder "
                                      "run (encoder and hybrid inversion).")
NUM_IMAGES = flags.DEFINE_integer("num_images", 16, "invert: images of --split to "
                                  "invert (with --images, one per file).")


def main() -> None:
  if NUM_IMAGES.value < 1:
    common.fail(f"--num_images must be at least 1, got {NUM_IMAGES.value}.")
  methods = [method.strip() for method in INVERSION.value if method.strip()]
  unknown = [method for method in methods if method not in ("optimize", "encoder",
                                                            "hybrid")]
  if unknown or not methods:
    common.fail(f"--inversion={','.join(INVERSION.value)} is not a list of optimize, "
                "encoder, hybrid.")
  if len(set(methods)) != len(methods):
    common.fail(f"--inversion={','.join(methods)} names a method twice.")
  settings = projector_flags.projector_settings()
  if "hybrid" in methods and not flags.FLAGS["encoder_weight"].present:
    from cnnjax.editing.invert_runs import HYBRID_ENCODER_WEIGHT  # Imports jax.
    settings["encoder_weight"] = HYBRID_ENCODER_WEIGHT
  workdir = common.required_workdir()
  if common.OUT_DIR.value is None:
    common.fail("--out_dir is required for invert: the directory of invert.png and "
                "invert.json.")
  if methods != ["optimize"] and not ENCODER_WORKDIR.value and any(
      method in ("encoder", "hybrid") for method in methods):
    common.fail("--inversion=encoder and hybrid need --encoder_workdir=DIR (a "
                "gan_encoder run, configs/gan_encoder.py).")
  from cnnjax.editing import inversion  # Imports jax.
  from cnnjax.editing.invert_runs import run_invert
  images = common.IMAGES.value
  run_invert(workdir, out_dir=common.OUT_DIR.value, methods=methods,
             projector=inversion.ProjectorSettings(**settings),
             num_images=len(images) if images else NUM_IMAGES.value,
             encoder_workdir=ENCODER_WORKDIR.value, image_paths=images,
             split=common.SPLIT.value or "test",
             extractor_workdir=common.EXTRACTOR_WORKDIR.value, seed=common.SEED.value,
             step=common.STEP.value)
