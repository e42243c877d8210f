"""The README's commands and examples are the ones that work."""
import os
import re

import pytest

from efficientnetv2_tf import checkpoints
import hparams
from hparams import models
from tests import tf1_reference
from tests.test_model import PARAMS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, 'README.md')).read()
EXPORT_EXAMPLE = 'export_dir'


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
    cfg = hparams.get_config(name)
    assert int(params.replace(',', '')) == PARAMS[name]
    assert (int(train), int(evaluation)) == (hparams.train_image_size(cfg),
                                             cfg.eval.isize)
    assert float(dropout) == cfg.model.dropout_rate
    assert set(weights.strip().split(', ')) == set(
        checkpoints.PRETRAINED_URLS[name])


@pytest.mark.slow
def test_python_examples_run(monkeypatch, tmp_path):
  # The named-weights example downloads; serve it a local official-format
  # archive instead.
  import numpy as np  # pylint: disable=g-import-not-at-top
  image = np.zeros((1, 32, 32, 3), 'float32')
  directory, _, _ = tf1_reference.official_checkpoint(
      image, tmp_path / 'ckpt', 'efficientnetv2-b0', models.V2_BASE_BLOCKS)
  archive = tf1_reference.archive(directory,
                                  tmp_path / 'efficientnetv2-b0.tgz')
  monkeypatch.setitem(checkpoints.PRETRAINED_URLS, 'efficientnetv2-b0',
                      {'imagenet': archive.as_uri()})
  monkeypatch.setenv(checkpoints.CACHE_ENV, str(tmp_path / 'cache'))
  namespace = {}
  # The export examples need an export; tests/test_export.py runs them.
  examples = [b for b in _blocks('python') if EXPORT_EXAMPLE not in b]
  assert len(examples) >= 5
  for code in examples:
    exec(compile(code, 'README.md', 'exec'), namespace)  # pylint: disable=exec-used
  assert namespace['finetune'].num_classes == 5
  assert namespace['model'].count_params() > 0
