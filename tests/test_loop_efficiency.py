"""The training loop neither retraces its step nor reads device values every step."""

from cnnjax.runs import gan
from cnnjax.train import gan_program, loop
from cnnjax.train.validation import validate_gan_config
from conftest import load_config

NUM_STEPS = 30


def test_step_is_traced_once_and_host_reads_happen_only_on_logging_steps(
    monkeypatch, tmp_path, data_dir):
  traces, fetches = [], []
  traced_step, fetch = gan_program.gan_train_step, loop._fetch

  def counting_step(*args, **kwargs):
    traces.append(1)  # Runs at trace time only.
    return traced_step(*args, **kwargs)

  def counting_fetch(tree):
    fetches.append(1)
    return fetch(tree)

  monkeypatch.setattr(gan_program, "gan_train_step", counting_step)
  monkeypatch.setattr(loop, "_fetch", counting_fetch)
  config = load_config("dcgan.py", "tiny")
  config.data.data_dir = data_dir
  config.train.num_steps = NUM_STEPS
  # One logging, sampling and checkpoint step at the very end of the run.
  config.train.log_every = config.train.sample_every = NUM_STEPS
  config.checkpoint.every = NUM_STEPS
  metrics = loop.run_training(config, str(tmp_path), validate=validate_gan_config,
                              build_program=gan.KIND.build_program)
  assert len(traces) == 1
  # Metrics, divergence record, the finiteness check and the grid: a handful of reads
  # for the whole run, where a per-step read would make at least NUM_STEPS.
  assert 1 <= len(fetches) <= 6
  assert set(metrics) >= {"d_loss", "g_loss", "steps_per_sec"}
