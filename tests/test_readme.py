"""The README's commands and examples are the ones that work.

Every `python main.py` command of its bash blocks runs reduced, in this
process, through `tests.commands.reduce` (see tests/commands.py): the
quick start first, and the commands that use its run after it, in README
order; its output is checked against the one the README shows.
"""
import contextlib
import inspect
import io
import json
import os
import re
from typing import Any, Dict, List, Tuple

import pytest

from app import runs
import main
from efficientnetv2_tf import official
from efficientnetv2_tf.preprocessing import Augmentation
import hparams
from hparams import models
from hparams.weights import TAGS
from tests import commands
from tests import image_files
from tests import reduced_runs
from tests import tf1_reference
# pylint: disable=unused-import
from tests.reduced_runs import birds_dir
from tests.reduced_runs import data_dirs
from tests.reduced_runs import imagenet21k_dir
from tests.reduced_runs import imagenet_dir
from tests.reduced_runs import published_weights
from tests.reduced_runs import unoptimised_graphs
# pylint: enable=unused-import
from tests.oracle_fixtures import PARAM_COUNTS

ROOT = commands.ROOT
README_PATH = os.path.join(ROOT, 'README.md')
README = open(README_PATH).read()
EXPORT_EXAMPLE = 'export_dir'

MAIN_COMMANDS = commands.bash_commands(README_PATH)
QUICK_START = ['main.py']
# Two stages of three epochs: as many evaluations a stage as the README's
# quick-start output shows around its `...`.
QUICK_START_EPOCHS = 6
# Digits' one image a class, 10 in all: two training steps an epoch.
QUICK_START_TINY = {**commands.TINY, 'data.per_class': 1}
PHOTOS = 2


def _mode(argv: List[str]) -> str:
  return commands.given_flags(argv).get('mode', main.FLAGS['mode'].default)


def _same_runs(argvs: List[List[str]]) -> List[List[List[str]]]:
  """Commands grouped by the runs they start: those that differ only in
  hardware and paths (the multi-worker and TPU ones) are the same run once
  reduced, and one of them runs for all."""
  groups: Dict[str, List[List[str]]] = {}
  for argv in argvs:
    key = '\n'.join(str(cfg) for cfg in commands.configs(argv))
    groups.setdefault(key, []).append(argv)
  return list(groups.values())


# The commands that train, and those that use a trained model: the quick
# start's run, or named weights.
TRAINING = _same_runs([
    argv for argv in MAIN_COMMANDS
    if argv != QUICK_START and _mode(argv) in ('train', 'traineval')])
ON_QUICK_START_RUN = [argv for argv in MAIN_COMMANDS
                      if _mode(argv) in runs.INFERENCE_MODES
                      and 'weights' not in commands.given_flags(argv)]
ON_NAMED_WEIGHTS = [argv for argv in MAIN_COMMANDS
                    if _mode(argv) in runs.INFERENCE_MODES
                    and commands.given_flags(argv).get('weights')
                    in TAGS]

pytestmark = pytest.mark.usefixtures('unoptimised_graphs')


def _blocks(language):
  return re.findall(rf'```{language}\n(.*?)```', README, re.S)


def test_ci_runs_the_readme_test_command():
  test_command = [b for b in _blocks('bash') if 'pytest' in b]
  assert len(test_command) == 1
  ci = open(os.path.join(ROOT, '.ci', 'run')).read()
  assert test_command[0].strip() in ci


def test_model_table_matches_presets_counts_and_weights():
  rows = re.findall(r'^\| (efficient\S+) \| ([\d,]+) \| (\d+) / (\d+) \| '
                    r'([\d.]+) \| ([^|]+) \|$', README, re.M)
  assert sorted(r[0] for r in rows) == hparams.list_models()
  for name, params, train, evaluation, dropout, weights in rows:
    specs = hparams.get_specs(name)
    assert int(params.replace(',', '')) == PARAM_COUNTS[name]
    assert (int(train), int(evaluation)) == (specs.data.train_image_size,
                                             specs.data.eval_image_size)
    assert float(dropout) == specs.model.dropout_rate
    assert set(weights.strip().split(', ')) == set(hparams.weights.tags(name))


def test_readme_weights_table_is_the_registry():
  assert hparams.weights.markdown_table() in README


def test_readme_gives_get_model_signature():
  import efficientnetv2_tf  # pylint: disable=g-import-not-at-top
  quoted = re.search(r'`(get_model\(model_name.*?\))`', README, re.S)
  assert quoted, 'the README no longer quotes the signature of get_model'
  signature = inspect.signature(efficientnetv2_tf.get_model)
  parameters = ', '.join(
      str(p.replace(annotation=inspect.Parameter.empty))
      for p in signature.parameters.values())
  assert ' '.join(quoted.group(1).split()) == f'get_model({parameters})'


def test_imagenet_archive_folders_get_the_recipe_contract_right_for_v2():
  # The README: such a folder names no weights, and the recipe's contract
  # it gets is the weights' own for V2 models but not for V1 (AdvProp).
  for entry in hparams.weights.all_published():
    if entry.tag != 'imagenet':
      continue
    folder = hparams.weights.archive_folder(entry)
    assert folder == entry.model_name
    assert hparams.weights.named_weights(
        entry.model_name, os.path.join(ROOT, folder)) is None
    specs = hparams.get_specs(entry.model_name)
    recipe = Augmentation.from_specs(specs).contract(
        specs.data.eval_image_size)
    assert (recipe == entry.contract) == entry.model_name.startswith(
        'efficientnetv2-'), entry.name


@pytest.mark.slow
def test_python_examples_run(monkeypatch, tmp_path):
  # The named-weights example downloads; serve it a local official-format
  # archive instead.
  import numpy as np  # pylint: disable=g-import-not-at-top
  image = np.zeros((1, 32, 32, 3), 'float32')
  directory, _, _ = tf1_reference.official_checkpoint(
      image, tmp_path / 'ckpt', 'efficientnetv2-b0', models.V2_BASE_BLOCKS)
  monkeypatch.setenv(official.CACHE_ENV, str(tmp_path / 'cache'))
  tf1_reference.place_in_cache(directory, 'efficientnetv2-b0', 'imagenet')
  namespace = {}
  # The export examples need an export; tests/test_export.py runs them.
  examples = [b for b in _blocks('python') if EXPORT_EXAMPLE not in b]
  assert len(examples) >= 5
  for code in examples:
    exec(compile(code, 'README.md', 'exec'), namespace)  # pylint: disable=exec-used
  assert namespace['finetune'].num_classes == 5
  assert namespace['model'].count_params() > 0


def _name(same_runs: List[List[str]]) -> str:
  """A test id: the dataset the commands read, and their hardware."""
  strategies = [commands.given_flags(argv).get('strategy')
                for argv in same_runs]
  return '-'.join(filter(None, [
      commands.configs(same_runs[0])[0].data.dataset,
      '+'.join(filter(None, strategies))]))


def _stage_names(lines: List[str]) -> List[str]:
  return [line.split(':')[0] for line in lines if line.startswith('stage ')]


def _line_pattern(line: str) -> str:
  """A README output line as a regex in which every number may differ."""
  number = r'\d[\d,]*(?:\.\d+)?'
  return number.join(re.escape(part) for part in re.split(number, line))


@pytest.fixture(scope='module')
def quick_start(tmp_path_factory) -> Tuple[str, List[str]]:
  """The quick start, reduced, in the directory that the commands using
  its run share: that directory, and the lines the run printed, with paths
  relative to it as the README shows them."""
  root = tmp_path_factory.mktemp('readme')
  argv = commands.reduce(QUICK_START, root, {}, QUICK_START_TINY,
                         epochs=QUICK_START_EPOCHS)
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    commands.run_main(argv)
  text = printed.getvalue().replace(f'{root}{os.sep}', '')
  # Progress bars redraw their line after a carriage return.
  return str(root), re.split(r'[\r\n]', text)


def _check_export(flags: Dict[str, Any], printed: str) -> None:
  export_dir = flags.get('export_dir') or os.path.join(flags['model_dir'],
                                                       'export')
  for name in ('saved_model', 'hub_classification', 'hub_feature_vector',
               'model.tflite', 'model.onnx', 'labels.txt', 'export.json'):
    assert os.path.exists(os.path.join(export_dir, name)), name
  assert f'to {export_dir}:' in printed


def _check_predict(flags: Dict[str, Any], printed: str) -> None:
  with open(flags['predictions_file']) as f:
    rows = json.load(f)
  assert len(rows) == PHOTOS
  assert all(len(row['top_k']) == flags.get('top_k', 5) for row in rows)
  assert f'{PHOTOS} images classified, 0 unreadable' in printed


def _check_benchmark(flags: Dict[str, Any], printed: str) -> None:
  results = [json.loads(line.split(' ', 1)[1])
             for line in printed.splitlines()
             if line.startswith('benchmark ')]
  assert [(r['runtime'], r['batch_size']) for r in results] == [
      (runtime, int(size))
      for runtime in flags.get('runtime', 'tf').split(',')
      for size in flags['batch_sizes'].split(',')]
  if 'image_size' in flags:
    assert {r['image_size'] for r in results} == {flags['image_size']}


CHECKS = {'export': _check_export, 'predict': _check_predict,
          'benchmark': _check_benchmark}


def test_each_main_command_of_the_readme_is_run_by_a_test():
  tested = ([QUICK_START] + [argv for same in TRAINING for argv in same] +
            ON_QUICK_START_RUN + ON_NAMED_WEIGHTS)
  assert sorted(tested) == sorted(MAIN_COMMANDS)
  assert all(_mode(argv) in CHECKS
             for argv in ON_QUICK_START_RUN + ON_NAMED_WEIGHTS)


@pytest.mark.slow
def test_quick_start_prints_the_output_the_readme_shows(quick_start):
  [output] = _blocks('text')
  shown = output.splitlines()
  _, printed = quick_start
  lines = iter(printed)
  for line in shown:
    if line != '...':
      pattern = _line_pattern(line)
      assert any(re.fullmatch(pattern, out) for out in lines), line
  # Numbers may differ, but not the stages: the reduced run keeps two.
  assert _stage_names(printed) == _stage_names(shown) == ['stage 1/2',
                                                          'stage 2/2']


@pytest.mark.slow
@pytest.mark.parametrize('same_runs', TRAINING,
                         ids=[_name(same) for same in TRAINING])
def test_training_command_trains_on_its_dataset(same_runs, data_dirs,
                                                published_weights, tmp_path,
                                                monkeypatch):
  argv = same_runs[0]
  loads = reduced_runs.spy(monkeypatch, official, 'load_official')
  run_dir = reduced_runs.train(commands.reduce(argv, tmp_path, data_dirs))
  results = reduced_runs.results(run_dir)
  assert results['dataset'] == commands.configs(argv)[0].data.dataset
  assert results['step'] >= 1
  if commands.given_flags(argv).get('weights') in TAGS:
    assert [report.checkpoint.startswith(published_weights)
            for report in loads] == [True]


@pytest.mark.slow
def test_commands_on_the_quick_start_run_export_predict_and_benchmark(
    quick_start, capsys):
  root, _ = quick_start
  for argv in ON_QUICK_START_RUN:
    reduced = commands.reduce(argv, root, {})
    flags = commands.given_flags(reduced)
    if 'image_path' in flags:  # a glob of JPEGs
      for i in range(PHOTOS):
        image_files.write(
            os.path.join(os.path.dirname(flags['image_path']), f'{i}.jpg'),
            image_files.pixels(40, 30, seed=i))
    commands.run_main(reduced)
    CHECKS[_mode(argv)](flags, capsys.readouterr().out)


@pytest.mark.slow
@pytest.mark.parametrize('argv', ON_NAMED_WEIGHTS, ids=_mode)
def test_commands_on_named_weights_use_the_published_ones(
    argv, published_weights, tmp_path, monkeypatch, capsys):
  loads = reduced_runs.spy(monkeypatch, official, 'load_official')
  reduced = commands.reduce(argv, tmp_path, {})
  commands.run_main(reduced)
  CHECKS[_mode(argv)](commands.given_flags(reduced), capsys.readouterr().out)
  assert [report.checkpoint.startswith(published_weights)
          for report in loads] == [True]
