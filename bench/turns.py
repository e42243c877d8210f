"""Long runs that take turns on one machine, each in a process of its own.

A run compared with another over minutes (the progressive section's fixed
and progressive training) should see the same moments of the machine, so
the runs take turns of one epoch each. Each runs in its own process: two
TensorFlow runs in one process share its thread pools and input threads.
There, on two cores, the progressive run of `run_all.py --quick` on digits
(65 images per class) trained in 298 s, its epochs that began a stage
taking up to 65 s, and letting go of a finished stage's input sometimes
took 17 to 22 s; in a process of its own it trained in 186 s, those
epochs in 18 to 31 s. (The trainer now lets go of finished input on a
thread of its own, `distribute.release`.)

The parent starts every command at once with two pipes; a run waits for
its first turn (`first_turn`), and ends each turn with `next_turn`, which
returns when its next turn comes. Its turn also ends when it exits. This
module imports nothing heavy, so a run can wait before TensorFlow loads.
"""
import os
import subprocess
import time
from typing import Dict, List, Mapping, Sequence, Tuple

# The environment variable that gives a run its pipes: "read,write".
PIPES = 'BENCH_TURN_PIPES'


def _pipes() -> Tuple[int, int]:
  value = os.environ.get(PIPES)
  if not value:
    return -1, -1
  go, done = value.split(',')
  return int(go), int(done)


def first_turn() -> float:
  """Blocks until this run's first turn; returns the seconds it waited.
  Outside `in_turns`, returns at once."""
  go, _ = _pipes()
  started = time.perf_counter()
  if go >= 0 and not os.read(go, 1):
    raise SystemExit('the process that gave the turns has ended')
  return time.perf_counter() - started


def next_turn() -> float:
  """Ends this run's turn and blocks until its next one; returns the
  seconds it waited."""
  _, done = _pipes()
  if done >= 0:
    os.write(done, b'.')
  return first_turn()


def _start(command: Sequence[str]) -> Tuple[subprocess.Popen, int, int]:
  go_read, go_write = os.pipe()
  done_read, done_write = os.pipe()
  env = {**os.environ, PIPES: f'{go_read},{done_write}'}
  process = subprocess.Popen(list(command), env=env,
                             pass_fds=(go_read, done_write))
  os.close(go_read)
  os.close(done_write)
  return process, go_write, done_read


def in_turns(commands: Mapping[str, Sequence[str]]) -> None:
  """Runs each of `commands` in a process of its own, one at a time, in
  the order given, a turn each until it calls `next_turn` or exits; once
  only one is left, it runs on. Raises `RuntimeError` naming every run that
  failed, once all have ended."""
  runs: Dict[str, Tuple[subprocess.Popen, int, int]] = {}
  try:
    for name, command in commands.items():
      runs[name] = _start(command)
    active: List[str] = list(commands)
    failed: List[str] = []
    while active:
      for name in list(active):
        process, go, done = runs[name]
        try:
          os.write(go, b'.')
        except BrokenPipeError:
          pass  # it has exited: reading `done` says so
        if os.read(done, 1):
          continue
        active.remove(name)
        os.close(go)
        os.close(done)
        if process.wait():
          failed.append(f'{name} (exit status {process.returncode})')
    if failed:
      raise RuntimeError(f'runs that failed: {", ".join(failed)}')
  finally:
    for process, _, _ in runs.values():
      if process.poll() is None:
        process.kill()
        process.wait()
