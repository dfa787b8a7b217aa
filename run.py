"""cnnjax: convolutional image generation and editing in JAX/Flax.

Commands (the first positional argument; `train` when omitted):
{commands}

Bad input (flags, config values, datasets, work directories) ends with a one-line
`error: ...` on stderr and exit status 2, before anything in the work directory changes.

Multi-process (one process per host or per GPU, each running the same command):
{multi_process} run over several processes, initialised from the flags
--coordinator_address, --num_processes, --process_id (or JAX's JAX_* variables), from a
SLURM step of several tasks or a Cloud TPU pod slice (see `cnnjax.train.distributed`);
the other commands refuse a multi-process launch. `run.py --launcher=slurm` writes a
multi-node SLURM job (--nodes, --tasks_per_node, --gpus_per_task, --slurm=KEY=VALUE).
"""

import os
import re

from absl import app, flags, logging

from cnnjax.commands import COMMANDS, MULTI_PROCESS_COMMANDS
from cnnjax.commands.common import distributed_settings, fail, last_line
from cnnjax.errors import CnnjaxError
from cnnjax.train.distributed import initialize as initialize_distributed
from cnnjax.train.distributed import plan as distributed_plan

__doc__ = __doc__.format(commands="\n".join(module.USAGE for module in COMMANDS.values()),
                         multi_process=" and ".join(MULTI_PROCESS_COMMANDS))
FLAGS = flags.FLAGS


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing whose errors are one line (absl's own add a usage hint)."""
  try:
    return FLAGS(argv)
  except flags.Error as error:
    message = str(error)
    flag = message.split(":", 1)[0] if message.startswith("flag ") else "flags"
    fail(f"{flag}: {last_line(error)}")
  except (AttributeError, KeyError) as error:  # A misspelt --config.FIELD override.
    unknown = [arg.split("=", 1)[0] for arg in argv[1:] if arg.startswith("--config.")]
    suggestion = re.search(r'Did you mean "([^"]+)"', str(error))
    hint = f"; did you mean {suggestion.group(1)!r}?" if suggestion else "."
    fail(f"No such config field among {', '.join(unknown)}{hint} "
         "(see the config file for the fields).")
  except (SyntaxError, ImportError) as error:   # --config names a file that is not Python.
    fail(f"--config: {last_line(error)}")
  except CnnjaxError as error:
    fail(error)


def main(argv: list[str]) -> None:
  command, *rest = argv[1:] or ["train"]
  if command not in COMMANDS or rest:
    fail(f"Unknown command {' '.join(argv[1:])!r}: use one of {', '.join(COMMANDS)} "
         "(see python run.py --help).")
  try:
    settings = distributed_settings()
    if command not in MULTI_PROCESS_COMMANDS and distributed_plan(settings, os.environ):
      fail(f"`run.py {command}` runs as one process, but the flags or the environment (a "
           "SLURM step of several tasks, a TPU pod slice) ask for several: start it once, "
           "without --coordinator_address/--num_processes/--process_id or srun, or add "
           f"--distributed=off (multi-process: {', '.join(MULTI_PROCESS_COMMANDS)}).")
    # Before any JAX computation: a no-op for one plain process.
    initialize_distributed(settings)
    COMMANDS[command].main()
  except CnnjaxError as error:
    logging.flush()
    fail(error)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
