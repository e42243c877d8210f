"""Every command in docs/recipes.md runs, reduced, and does what it says.

Each recipe runs in this process through `tests.commands.reduce`: a tiny
model for one epoch on data written here (tfds mocks, JPEG folders,
TFRecord files), with named weights served from local archives through the
real download path. A recipe is named by its `--model_dir`.
"""
import csv
import glob
import os
import re
from typing import Any, Dict, List

import keras
import numpy as np
import pytest
import tensorflow as tf

from efficientnetv2_tf import blockargs
from efficientnetv2_tf import loading
from efficientnetv2_tf import official
from efficientnetv2_tf import progressive
from efficientnetv2_tf.model import EfficientNet
from efficientnetv2_tf.run_dir import RunDir
import hparams
from tests import commands
from tests import reduced_runs
from tests.reduced_runs import BATCH
from tests.reduced_runs import TFDS_EXAMPLES
# pylint: disable=unused-import
from tests.reduced_runs import birds_dir
from tests.reduced_runs import data_dirs
from tests.reduced_runs import imagenet21k_dir
from tests.reduced_runs import imagenet_dir
from tests.reduced_runs import published_weights
from tests.reduced_runs import unoptimised_graphs
# pylint: enable=unused-import

RECIPES_PATH = os.path.join(commands.ROOT, 'docs', 'recipes.md')
RECIPE_YAML_DIR = os.path.join(commands.ROOT, 'hparams', 'recipes')
RECIPES = {commands.given_flags(argv)['model_dir']: argv
           for argv in commands.bash_commands(RECIPES_PATH)}

# Recipe: (model name, training images of its reduced run).
FINE_TUNING = {
    'runs/b0-fashion-mnist': ('efficientnetv2-b0', TFDS_EXAMPLES),
    'runs/b0-mnist': ('efficientnetv2-b0', TFDS_EXAMPLES),
    'runs/s-birds': ('efficientnetv2-s', reduced_runs.BIRD_SPECIES),
    'runs/s-imagenette': ('efficientnetv2-s', TFDS_EXAMPLES),
}
# Recipe: (repeats per stage, which stages are Fused-MBConv).
ABLATIONS = {
    'runs/s-imagenette-all-mbconv': ([2, 4, 4, 6, 9, 15], [False] * 6),
    'runs/s-imagenette-all-fused': ([2, 4, 4, 6, 9, 15], [True] * 6),
    'runs/s-imagenette-halved-repeats': ([1, 2, 2, 3, 4, 7],
                                         [True] * 3 + [False] * 3),
    'runs/s-imagenette-two-stages-dropped': ([2, 4, 6, 15],
                                             [True] * 2 + [False] * 2),
}
WIDTH = 'runs/s-imagenette-width-0.1'
DROPOUT = 'runs/s-imagenette-dropout'
SURVIVAL = 'runs/s-imagenette-survival-0.5'
PLATEAU = 'runs/s-imagenette-plateau'
STAGE_EPOCHS = 'runs/s-imagenette-4-stages'
DROPOUT_RANGES = 'runs/s-imagenette-dropout-ranges'
# Recipe: (first-stage size, last-stage size of each sweep combination).
SIZE_RANGES = {
    'runs/s-imagenette-sizes-from-128': (128, [200, 300, 400]),
    'runs/s-imagenette-sizes-from-300': (300, [300, 400]),
}
IMAGENET_PRESETS = ['runs/s-imagenet', 'runs/m-imagenet', 'runs/l-imagenet']
# Recipe: (image size, magnitude, mixup, dropout) of each stage.
TABLE6 = {
    'runs/s-imagenet-table6': [(128, 5.0, 0.0, 0.1), (185, 8.33, 0.0, 0.17),
                               (242, 11.67, 0.0, 0.23), (300, 15.0, 0.0, 0.3)],
    'runs/m-imagenet-table6': [(128, 5.0, 0.0, 0.1), (212, 10.0, 0.07, 0.2),
                               (296, 15.0, 0.13, 0.3), (380, 20.0, 0.2, 0.4)],
    'runs/l-imagenet-table6': [(128, 5.0, 0.0, 0.1), (212, 11.67, 0.13, 0.23),
                               (296, 18.33, 0.27, 0.37),
                               (380, 25.0, 0.4, 0.5)],
}
PRETRAIN_21K, FINE_TUNE_1K = 'runs/s-imagenet21k', 'runs/s-imagenet21k-ft1k'
TESTED = [*FINE_TUNING, *ABLATIONS, WIDTH, DROPOUT, SURVIVAL, PLATEAU,
          STAGE_EPOCHS, DROPOUT_RANGES, *SIZE_RANGES, *IMAGENET_PRESETS,
          *TABLE6, PRETRAIN_21K, FINE_TUNE_1K]

pytestmark = pytest.mark.usefixtures('unoptimised_graphs')


def _run(name: str, tmp_path: Any, data_dirs: Dict[str, str],
         **tiny: Any) -> str:
  """Runs a recipe reduced, with `tiny` settings beyond `commands.TINY`;
  returns the run's directory."""
  return reduced_runs.train(commands.reduce(
      RECIPES[name], tmp_path, data_dirs, {**commands.TINY, **tiny}))


def _saved_model(run_dir: str) -> EfficientNet:
  """The model a run built, from its saved config, without initialising."""
  spec = RunDir(run_dir).load_specs().model
  with keras.StatelessScope():
    return EfficientNet.from_spec(spec)


def _stage_columns(results: Dict[str, Any]) -> List[str]:
  """Each planned stage's settings as results.json describes them."""
  return [stage.split(', ', 1)[1] for stage in results['stages']]


def _describe(size: int, magnitude: float, mixup: float,
              dropout: float) -> str:
  return (f'{size} px, magnitude {magnitude}, mixup {mixup}, cutmix 0.0, '
          f'dropout {dropout}')


def test_each_bash_block_is_one_recipe_and_each_recipe_is_tested():
  blocks = commands.bash_blocks(RECIPES_PATH)
  assert [len(commands.main_commands(block)) for block in blocks] == [
      1] * len(blocks)
  assert len(RECIPES) == len(blocks)  # no two recipes share a model_dir
  assert sorted(RECIPES) == sorted(TESTED)


def test_each_recipe_yaml_file_is_used_by_a_recipe():
  used = {path for argv in RECIPES.values()
          for path in commands.given_flags(argv).get(
              'hparam_str', '').split(',') if path.endswith('.yaml')}
  assert sorted(used) == sorted(
      os.path.relpath(path, commands.ROOT)
      for path in glob.glob(os.path.join(RECIPE_YAML_DIR, '*')))


def test_min_steps_epochs_quoted_for_small_datasets_are_the_planned_ones():
  # The tfds training splits of FashionMNIST and ImageNette (160px-v2).
  train_sizes = {'FashionMnistFt': 60_000, 'ImagenetteFt': 9_469}
  text = ' '.join(open(RECIPES_PATH).read().split())
  quoted = re.search(r'at batch (\d+) that is (\d+) epochs of FashionMNIST '
                     r'and (\d+) of ImageNette', text)
  assert quoted, 'the recipes no longer quote the stretched epochs'
  batch, *epochs = (int(n) for n in quoted.groups())
  for preset, quoted_epochs in zip(train_sizes, epochs):
    specs = hparams.get_specs('efficientnetv2-s', preset)
    run = progressive.make_plan(specs, train_sizes[preset], num_replicas=1)
    assert (run.global_batch, run.epochs) == (batch, quoted_epochs), preset


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_every_run_of_a_recipe_has_a_valid_config_and_stage_plan(name):
  for specs in commands.run_specs(RECIPES[name]):
    assert progressive.plan(specs, steps_per_epoch=100)


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(FINE_TUNING))
def test_fine_tuning_recipe_starts_from_the_named_weights(
    name, data_dirs, published_weights, tmp_path, monkeypatch):
  model_name, train_images = FINE_TUNING[name]
  loads = reduced_runs.spy(monkeypatch, official, 'load_official')
  run_dir = _run(name, tmp_path, data_dirs)
  assert reduced_runs.results(run_dir)['step'] == train_images // BATCH
  assert len(loads) == 1
  report = loads[0]
  assert report.checkpoint.startswith(
      os.path.join(published_weights, 'efficientnetv2_tf', model_name))
  assert report.from_ema == report.loaded and report.skipped_head


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(ABLATIONS))
def test_ablation_recipe_trains_the_changed_blocks(name, data_dirs,
                                                   tmp_path):
  repeats, fused = ABLATIONS[name]
  run_dir = _run(name, tmp_path, data_dirs)
  assert reduced_runs.results(run_dir)['step'] == 1
  model_cfg = reduced_runs.saved_config(run_dir)['model']
  stages = [blockargs.decode(block) for block in model_cfg['blocks_args']]
  assert [stage.num_repeat for stage in stages] == repeats
  assert [stage.conv_type == blockargs.FUSED_MBCONV
          for stage in stages] == fused
  assert 2 * np.prod([stage.strides for stage in stages]) == 32


@pytest.mark.slow
def test_width_recipe_keeps_its_width_when_reduced(data_dirs, tmp_path):
  run_dir = _run(WIDTH, tmp_path, data_dirs)
  assert reduced_runs.results(run_dir)['step'] == 1
  model = _saved_model(run_dir)
  assert model.get_layer('stem').filters == 8  # floored at min_depth
  assert model.num_features == 128


@pytest.mark.slow
def test_dropout_sweep_resolves_every_rate_and_trains_the_first(
    data_dirs, tmp_path):
  assert [cfg.model.dropout_rate for cfg in commands.configs(
      RECIPES[DROPOUT])] == [0.2, 0.3, 0.4, 0.5, 0.6]
  run_dir = _run(DROPOUT, tmp_path, data_dirs)
  assert reduced_runs.results(run_dir)['step'] == 1
  assert reduced_runs.saved_config(run_dir)['model']['dropout_rate'] == 0.2
  with open(os.path.join(os.path.dirname(run_dir), 'sweeps.csv')) as f:
    assert [row['run'] for row in csv.DictReader(f)] == [
        os.path.basename(run_dir)]


@pytest.mark.slow
def test_survival_recipe_drops_deeper_blocks_more_often(data_dirs, tmp_path):
  run_dir = _run(SURVIVAL, tmp_path, data_dirs)
  assert reduced_runs.results(run_dir)['step'] == 1
  blocks = [layer for layer in _saved_model(run_dir).layers
            if layer.name.startswith('blocks_')]
  np.testing.assert_allclose(
      [block.survival_prob for block in blocks],
      [1 - 0.5 * i / len(blocks) for i in range(len(blocks))])


@pytest.mark.slow
def test_plateau_recipe_saves_its_schedule_and_state(data_dirs, tmp_path):
  run_dir = _run(PLATEAU, tmp_path, data_dirs)
  results = reduced_runs.results(run_dir)
  assert results['step'] == 1 and results['eval_images'] == TFDS_EXAMPLES
  train = reduced_runs.saved_config(run_dir)['train']
  assert (train['lr_sched'], train['early_stop_patience']) == ('plateau', 3)
  saved = [name for name, _ in tf.train.list_variables(
      os.path.join(run_dir, 'checkpoints'))]
  assert any(name.startswith('plateau/') for name in saved)


@pytest.mark.slow
def test_stage_epochs_recipe_cuts_every_run_into_four_equal_stages(
    data_dirs, tmp_path):
  for specs in commands.run_specs(RECIPES[STAGE_EPOCHS]):
    stages = progressive.plan(specs, steps_per_epoch=1)
    quarter = specs.optim.epochs // 4
    assert [s.end_step for s in stages] == [quarter * i for i in (1, 2, 3, 4)]
    assert quarter in (20, 40, 60)
  run_dir = _run(STAGE_EPOCHS, tmp_path, data_dirs)
  results = reduced_runs.results(run_dir)
  assert results['step'] == 1 and len(results['stages']) == 4


@pytest.mark.slow
def test_dropout_range_recipe_grows_dropout_from_min_to_max(data_dirs,
                                                            tmp_path):
  ranges = []
  for specs in commands.run_specs(RECIPES[DROPOUT_RANGES]):
    stages = progressive.plan(specs, steps_per_epoch=100)
    ranges.append((stages[0].dropout_rate, stages[-1].dropout_rate))
  assert ranges == [(low, high) for low in (0.1, 0.2)
                    for high in (0.3, 0.5, 0.7)]
  results = reduced_runs.results(_run(DROPOUT_RANGES, tmp_path, data_dirs))
  assert results['step'] == 1
  assert results['stages'][0].endswith('dropout 0.1')
  assert results['stages'][-1].endswith('dropout 0.3')


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(SIZE_RANGES))
def test_size_range_recipe_grows_images_from_min_to_max(name, data_dirs,
                                                        tmp_path):
  first, lasts = SIZE_RANGES[name]
  ranges = [(stages[0].image_size, stages[-1].image_size)
            for stages in (progressive.plan(specs, steps_per_epoch=100)
                           for specs in commands.run_specs(RECIPES[name]))]
  assert ranges == [(first, last) for last in lasts]
  results = reduced_runs.results(_run(name, tmp_path, data_dirs))
  assert results['step'] == 1
  assert _stage_columns(results)[0].startswith(f'{first} px')
  assert _stage_columns(results)[-1].startswith(f'{lasts[0]} px')


@pytest.mark.slow
@pytest.mark.parametrize('name', IMAGENET_PRESETS)
def test_imagenet_preset_recipe_plans_the_code_schedule(name, data_dirs,
                                                        tmp_path):
  run_dir = _run(name, tmp_path, data_dirs)
  results = reduced_runs.results(run_dir)
  assert results['dataset'] == 'imagenet' and results['step'] == 1
  saved = reduced_runs.saved_config(run_dir)
  assert saved['progressive']['schedule'] == 'code'
  # The code schedule's first stage is one step above data.ibase (16).
  assert [c.split(',')[0] for c in _stage_columns(results)] == [
      '20 px', '24 px', '28 px', '32 px']


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(TABLE6))
def test_table6_recipe_plans_the_papers_stages(name, data_dirs, tmp_path):
  results = reduced_runs.results(_run(name, tmp_path, data_dirs))
  assert results['dataset'] == 'imagenet' and results['step'] == 1
  assert _stage_columns(results) == [_describe(*stage)
                                     for stage in TABLE6[name]]


@pytest.mark.slow
def test_21k_pretraining_then_fine_tuning_on_1k_loads_its_weights(
    data_dirs, tmp_path, monkeypatch, caplog):
  # A narrower head: 21,843 classes on 320 features would make every
  # checkpoint of the reduced run 100 MB.
  narrow = {'model.feature_size': 64}
  pretrain_dir = _run(PRETRAIN_21K, tmp_path, data_dirs, **narrow)
  results = reduced_runs.results(pretrain_dir)
  assert results['dataset'] == 'imagenet21k' and results['step'] == 1
  checkpoint = os.path.join(pretrain_dir, 'checkpoints', 'ckpt-1')
  assert any(name.startswith('ema/')
             for name, _ in tf.train.list_variables(checkpoint))
  located = reduced_runs.spy(monkeypatch, loading, 'locate')
  fine_tune_dir = _run(FINE_TUNE_1K, tmp_path, data_dirs, **narrow)
  results = reduced_runs.results(fine_tune_dir)
  assert results['dataset'] == 'imagenet2012' and results['step'] == 1
  assert located == [loading.Checkpoint(checkpoint, 'tf2', 21843)]
  assert reduced_runs.saved_config(fine_tune_dir)['train']['ft_init_ema']
  assert ('Checkpoint head has 21843 classes, the model 1000: the classifier '
          'is not loaded') in caplog.text
