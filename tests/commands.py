"""The `python main.py ...` commands of a Markdown file, made tiny and run.

Documentation shows commands for real runs: full-size models, whole
datasets, hundreds of epochs. To keep them working, a test runs each one
reduced to a few steps of a tiny model on small local data, in this process
(a subprocess per command would pay for a TensorFlow import each time):

    for argv in commands.bash_commands('docs/recipes.md'):
      commands.run_main(commands.reduce(argv, tmp_path, data_dirs))

Commands are argv lists as `main.py` receives them, `['main.py', '--flag=
value', ...]`. Paths in them are relative to the repository root, as the
documentation's are.
"""
import contextlib
import os
import re
import shlex
from typing import (Any, Dict, Iterator, List, Mapping, Optional, Sequence,
                    Union)

import keras
import ml_collections

from app import runs
import datasets  # registers each dataset's recipe, which --dataset_cfg names
import hparams
from hparams.weights import TAGS
import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Settings that make a run tiny, given to every key a command leaves unset:
# a command about width 0.1 keeps its width, one about 400 px its size.
# Depth 0.05 leaves one or two blocks per stage: building the training
# step's graph, not running it, is what a tiny run spends its time on.
TINY = {
    'model.width_coefficient': 0.25,
    'model.depth_coefficient': 0.05,
    'train.image_size': 32,
    'eval.isize': 32,
    'data.ibase': 16,
    'train.batch_size': 4,
    'train.min_steps': 0,
}
# The run length, set whatever the command says: every epoch costs an
# evaluation and a checkpoint, so a recipe of 80 epochs could not run in a
# test. The lengths a command asks for are checked in its configs instead.
EPOCHS = 1
# Flags that only say how much work a command does, set to the least.
LEAST_WORK = {'benchmark_iterations': 1}
# Flags that name hardware; a reduced command runs on this machine's CPU.
MACHINE_FLAGS = ('strategy', 'tpu', 'tpu_zone', 'gcp_project')
# Flags whose value is a path, relative to the repository root, that a
# command writes or reads back (given or by default).
_PATH_FLAGS = ('model_dir', 'export_dir', 'image_path', 'predictions_file')
_OPERATORS = ('&&', '||', ';', '|')


def bash_blocks(markdown_path: str) -> List[str]:
  """The contents of the ```bash blocks of a Markdown file, in order."""
  with open(markdown_path) as f:
    return re.findall(r'^```bash\n(.*?)^```', f.read(), re.S | re.M)


def main_commands(block: str) -> List[List[str]]:
  """The `python main.py ...` commands of a bash block, as argv lists.

  Lines continued with a backslash, or by a quote left open, are joined;
  commands chained with `&&` or `;` are told apart; other programs are left
  out.
  """
  commands = []
  for words in _lines(block):
    command: List[str] = []
    # A last ';' ends the line's last command.
    for word in words + [';']:
      if word not in _OPERATORS:
        command.append(word)
        continue
      if command[:2] == ['python', 'main.py']:
        commands.append(command[1:])
      command = []
  return commands


def _lines(block: str) -> Iterator[List[str]]:
  """The words of each shell line of a bash block."""
  line = ''
  for text in block.replace('\\\n', ' ').splitlines(keepends=True):
    line += text
    try:
      words = _words(line)
    except ValueError:  # a quote still open: the line goes on
      continue
    yield words
    line = ''
  if line:
    raise ValueError(f'a quote is never closed in this bash block: {line!r}')


def _words(line: str) -> List[str]:
  """A shell line's words, with `&&`, `;` and `|` as words of their own."""
  lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
  lexer.whitespace_split = True
  return list(lexer)


def bash_commands(markdown_path: str) -> List[List[str]]:
  """Every `python main.py ...` command of a Markdown file's bash blocks."""
  return [command for block in bash_blocks(markdown_path)
          for command in main_commands(block)]


@contextlib.contextmanager
def _parsed(argv: Sequence[str]) -> Iterator[Any]:
  """`main.FLAGS` holding a command's flags, in the repository root; the
  flags are reset afterwards so that the next command starts clean."""
  previous = os.getcwd()
  main.FLAGS.unparse_flags()
  try:
    os.chdir(ROOT)
    main.FLAGS(list(argv))
    yield main.FLAGS
  finally:
    main.FLAGS.unparse_flags()
    os.chdir(previous)


def given_flags(argv: Sequence[str]) -> Dict[str, Any]:
  """The flags a command sets, by name, with their parsed values."""
  with _parsed(argv) as flags:
    return {name: flags[name].value for name in flags
            if flags[name].present and flags[name].name == name}


def configs(argv: Sequence[str]) -> List[ml_collections.ConfigDict]:
  """The config of each run a command starts (one per sweep combination),
  resolved as `main.py` resolves it, before a dataset is bound."""
  with _parsed(argv) as flags:
    combinations = (runs.sweep_combinations(flags.sweeps) if flags.sweeps
                    else [None])
    return [main.make_config(combination) for combination in combinations]


def run_specs(argv: Sequence[str]) -> List[hparams.Specs]:
  """The specs of each run a command starts, as `configs` resolves them."""
  return [hparams.build_specs(cfg) for cfg in configs(argv)]


def _given_keys(argv: Sequence[str]) -> List[str]:
  """The config keys a command sets, in `--hparam_str` (YAML files
  included) or `--sweeps`."""
  with _parsed(argv) as flags:
    keys = list(hparams.as_mapping(flags.hparam_str))
    if flags.sweeps:
      keys += list(runs.sweep_combinations(flags.sweeps)[0])
    return keys


def _default_model_dir(argv: Sequence[str]) -> str:
  """Where `main.py` puts a run whose command gives no `--model_dir`."""
  with _parsed(argv) as flags:
    return os.path.join('runs', f'{flags.model_name}-{flags.dataset_cfg}')


def reduce(argv: Sequence[str], tmp_path: Union[str, os.PathLike],
           data_dirs: Mapping[str, str],
           tiny: Optional[Mapping[str, Any]] = None,
           epochs: int = EPOCHS) -> List[str]:
  """A command made tiny: what it is about stays, its cost goes.

  Args:
    argv: the command, `['main.py', ...]`.
    tmp_path: where the files a command writes or reads go: its
      `--model_dir` (given or default), `--export_dir`, `--image_path`,
      `--predictions_file` (given or default) and `--weights` path are
      placed under it, so that commands that use each other's runs still
      find them.
    data_dirs: `--data_dir` by dataset name (`data.dataset`); a dataset not
      in it keeps the command's.
    tiny: the settings for keys the command leaves unset; `TINY` by
      default. A real dataset wants a subset too, e.g. `{**TINY,
      'data.per_class': 2}`.
    epochs: how long the reduced run trains, whatever the command says.

  Returns:
    The reduced command, doing the `LEAST_WORK` where a flag says how
    much. A sweep keeps its first combination only, while `configs(argv)`
    resolves them all.
  """
  flags = given_flags(argv)
  given = set(_given_keys(argv))
  extra = {k: v for k, v in (TINY if tiny is None else tiny).items()
           if k not in given}
  sweep = {}
  if flags.get('sweeps'):
    sweep = runs.sweep_combinations(flags['sweeps'])[0]
  if 'train.epochs' in sweep:
    sweep['train.epochs'] = epochs
  else:
    extra['train.epochs'] = epochs
  flags['hparam_str'] = ','.join(
      text for text in (flags.get('hparam_str'), _pairs(extra)) if text)
  if sweep:
    flags['sweeps'] = _pairs(sweep)
  flags.setdefault('model_dir', _default_model_dir(argv))
  for name in _PATH_FLAGS:
    path = flags.get(name, main.FLAGS[name].default)
    if path is not None:
      flags[name] = _under(tmp_path, path)
  if flags.get('weights') not in (None, *TAGS):
    flags['weights'] = _under(tmp_path, flags['weights'])
  dataset = configs(argv)[0].data.dataset
  if dataset in data_dirs:
    flags['data_dir'] = data_dirs[dataset]
  for name in MACHINE_FLAGS:
    flags.pop(name, None)
  flags.update(LEAST_WORK)
  return ['main.py'] + [f'--{name}={_text(value)}'
                        for name, value in flags.items()]


def run_main(argv: Sequence[str]) -> None:
  """Runs `main.py` with these flags in this process, as `python main.py`
  would (a `UserError` is raised rather than printed).

  The dtype policy a mixed-precision run makes global is undone
  afterwards, as the end of its own process would.
  """
  policy = keras.mixed_precision.global_policy()
  try:
    with _parsed(argv):
      main.run()
  finally:
    keras.mixed_precision.set_global_policy(policy)


def _under(tmp_path: Union[str, os.PathLike], path: str) -> str:
  """`path` moved under `tmp_path`, URL scheme and leading `/` dropped."""
  return os.path.join(str(tmp_path), re.sub(r'^\w+://|^/+', '', path))


def _text(value: Any) -> str:
  """A value as `hparams.parse_value` and absl read it back."""
  if isinstance(value, bool):
    return str(value).lower()
  return str(value)


def _pairs(values: Mapping[str, Any]) -> str:
  return ','.join(f'{key}={_text(value)}' for key, value in values.items())
