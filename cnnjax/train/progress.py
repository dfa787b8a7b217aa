"""Throughput and ETA of a training loop, for logs and metrics.jsonl."""

import time


class Progress:
  """Measures steps/s between log points and the wall time since the start."""

  def __init__(self, start_step: int, num_steps: int):
    self._num_steps = num_steps
    self._start_time = time.perf_counter()
    self._last_time = self._start_time
    self._last_step = start_step

  def update(self, step: int) -> dict[str, float]:
    """Returns `steps_per_sec` since the previous call and `wall_time` (seconds)."""
    now = time.perf_counter()
    steps_per_sec = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_time, self._last_step = now, step
    return {"steps_per_sec": steps_per_sec, "wall_time": now - self._start_time}

  def describe(self, step: int, metrics: dict[str, float]) -> str:
    """One progress line: step, losses, steps/s and ETA."""
    rate = metrics.get("steps_per_sec", 0.0)
    eta = (self._num_steps - step) / rate if rate > 0 else float("inf")
    losses = " ".join(f"{name} {value:.4f}" for name, value in metrics.items()
                      if name.endswith("loss"))
    minutes, seconds = divmod(int(eta), 60) if eta != float("inf") else (0, 0)
    return (f"step {step}/{self._num_steps} | {losses} | {rate:.1f} steps/s | "
            f"ETA {minutes}:{seconds:02d}")
