import dataclasses
import os
import subprocess
import sys

import pytest

import datasets
from efficientnetv2_tf import blockargs
import hparams
from hparams import config
from hparams.errors import UserError
from tests.oracle_fixtures import load_presets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_layers_apply_in_order_base_model_dataset_user(monkeypatch):
  presets = hparams.Registry('dataset config')
  presets.add('test_layers_ds', {
      'model': {'num_classes': 7, 'dropout_rate': 0.5}})
  monkeypatch.setattr(hparams.datasets, 'DATASET_PRESETS', presets)
  cfg = hparams.get_config('efficientnetv2-s', 'TEST_LAYERS_DS',
                           'model.dropout_rate=0.1')
  assert cfg.model.blocks_args[0] == 'r2_k3_s1_e1_i24_o24_c1'  # model preset
  assert cfg.train.image_size == 300 and cfg.eval.isize == 384  # model preset
  assert cfg.model.num_classes == 7  # dataset preset
  assert cfg.model.dropout_rate == 0.1  # user override wins
  assert cfg.train.optimizer == 'rmsprop'  # base


def test_values_are_parsed_as_in_the_original():
  assert hparams.parse_overrides(
      'a=1,b=0.5,c=true,d=false,e=x|y,f=hello,g=None,h=[1,2],i=1e-5') == {
          'a': 1, 'b': 0.5, 'c': True, 'd': False, 'e': ['x', 'y'],
          'f': 'hello', 'g': None, 'h': [1, 2], 'i': 1e-5}


def test_pipe_sets_a_list_and_a_single_value_becomes_a_one_item_list():
  cfg = hparams.get_config(
      'efficientnetv2-b0', None,
      'model.blocks_args=r1_k3_s1_e1_i32_o16_c1|r2_k3_s2_e4_i16_o32_c1')
  assert cfg.model.blocks_args == ['r1_k3_s1_e1_i32_o16_c1',
                                   'r2_k3_s2_e4_i16_o32_c1']
  cfg = hparams.get_config('efficientnetv2-b0', None,
                           'model.blocks_args=r1_k3_s1_e1_i32_o16_c1')
  assert cfg.model.blocks_args == ['r1_k3_s1_e1_i32_o16_c1']


def test_int_is_accepted_for_a_float_key():
  cfg = hparams.get_config('efficientnetv2-b0', None,
                           'model.width_coefficient=2')
  assert cfg.model.width_coefficient == 2.0
  assert isinstance(cfg.model.width_coefficient, float)


def test_unknown_key_names_the_key_and_closest_valid_keys():
  with pytest.raises(UserError) as err:
    hparams.get_config('efficientnetv2-b0', None, 'model.dropout_rat=0.3')
  assert "unknown config key 'model.dropout_rat'" in str(err.value)
  assert 'closest valid: model.dropout_rate' in str(err.value)


def test_unknown_section_is_rejected():
  with pytest.raises(UserError, match="unknown config key 'modle.x'"):
    hparams.get_config('efficientnetv2-b0', None, 'modle.x=1')


@pytest.mark.parametrize('override, expected', [
    ('model.dropout_rate=abc', 'expected a number, got str'),
    ('model.num_classes=2.5', 'expected an int, got float'),
    ('model.num_classes=true', 'expected an int, got bool'),
    ('train.sched=1', 'expected a bool'),
    ('model.act_fn=3', 'expected a string, got int'),
    ('model.blocks_args=None', 'expected a list'),
    ('eval.isize=None', 'expected an int, got NoneType'),
])
def test_wrong_type_is_rejected(override, expected):
  with pytest.raises(UserError, match=expected):
    hparams.get_config('efficientnetv2-b0', None, override)


def test_none_is_accepted_where_the_default_is_none():
  cfg = hparams.get_config('efficientnetv2-b0', None,
                           'train.ft_init_ckpt=/ckpt,model.headbias=-2')
  assert cfg.model.headbias == -2.0
  hparams.override(cfg, 'train.ft_init_ckpt=None')
  assert cfg.train.ft_init_ckpt is None


def test_setting_a_section_to_a_value_is_rejected():
  with pytest.raises(UserError, match="'model' is a section"):
    hparams.get_config('efficientnetv2-b0', None, 'model=3')


@pytest.mark.parametrize('bad', ['train.epochs', 'epochs 10', '=3'])
def test_malformed_override_string_is_rejected(bad):
  with pytest.raises(UserError):
    hparams.get_config('efficientnetv2-b0', None, bad)


def test_resolved_config_round_trips_through_yaml(tmp_path):
  cfg = hparams.get_config(
      'efficientnet-b3', 'imagenet',
      'train.epochs=7,model.blocks_args=r1_k3_s1_e1_i32_o16_se0.25,'
      'train.ft_init_ckpt=/tmp/x,data.ram=12')
  path = tmp_path / 'config.yaml'
  hparams.save_yaml(cfg, str(path))
  # Start from another model: the file must restore every key.
  reloaded = hparams.get_config('efficientnetv2-s', None, str(path))
  assert reloaded.to_dict() == cfg.to_dict()
  assert hparams.to_yaml(reloaded) == path.read_text()


def test_yaml_file_with_unknown_key_is_rejected(tmp_path):
  path = tmp_path / 'bad.yaml'
  path.write_text('train:\n  epochz: 3\n')
  with pytest.raises(UserError, match="'train.epochz'.*train.epochs"):
    hparams.get_config('efficientnetv2-b0', None, str(path))


def test_missing_yaml_file_is_reported():
  with pytest.raises(UserError, match="config file 'nope.yaml' does not"):
    hparams.get_config('efficientnetv2-b0', None, 'nope.yaml')


def test_num_classes_is_defined_once():
  cfg = hparams.base_config()
  paths = [f'{s}.{k}' for s in cfg.keys() for k in cfg[s].keys()]
  assert [p for p in paths if p.endswith('num_classes')] == [
      'model.num_classes']


def test_train_size_fraction_follows_the_original_rounding():
  # 0.8 of the eval size, 224
  assert hparams.get_specs('efficientnet-b0').data.train_image_size == 176
  assert hparams.get_specs('efficientnetv2-s').data.train_image_size == 300


def test_unknown_model_name_lists_known_names():
  with pytest.raises(UserError) as err:
    hparams.get_config('efficientnetv2-ss')
  assert "did you mean 'efficientnetv2-s'" in str(err.value)
  assert 'efficientnet-b7' in str(err.value)


def test_yaml_files_and_pairs_combine_in_order(tmp_path):
  base = tmp_path / 'base.yaml'
  base.write_text('model:\n  dropout_rate: 0.4\ntrain:\n  epochs: 5\n')
  more = tmp_path / 'more.yaml'
  more.write_text('model:\n  width_coefficient: 0.5\ntrain:\n  epochs: 7\n')
  cfg = hparams.get_config('efficientnetv2-b0', None,
                           f'{base},train.epochs=6,data.ram=3,{more}')
  assert cfg.train.epochs == 7  # the last item that sets it wins
  assert cfg.model.dropout_rate == 0.4 and cfg.model.width_coefficient == 0.5
  assert cfg.data.ram == 3.0
  cfg = hparams.get_config('efficientnetv2-b0', None,
                           f'{more},train.epochs=6')
  assert cfg.train.epochs == 6


def test_a_yaml_file_among_pairs_is_checked_like_one_alone(tmp_path):
  with pytest.raises(UserError, match="config file 'nope.yaml' does not"):
    hparams.get_config('efficientnetv2-b0', None, 'train.epochs=3,nope.yaml')
  bad = tmp_path / 'bad.yaml'
  bad.write_text('train:\n  epochz: 3\n')
  with pytest.raises(UserError, match="'train.epochz'.*train.epochs"):
    hparams.get_config('efficientnetv2-b0', None, f'data.ram=3,{bad}')


@pytest.fixture
def empty_dataset_registries(monkeypatch):
  """Dataset presets and dataset defaults that a test fills itself."""
  monkeypatch.setattr(hparams.datasets, 'DATASET_PRESETS',
                      hparams.Registry('dataset config'))
  monkeypatch.setattr(hparams.datasets, 'DATASET_DEFAULTS',
                      hparams.Registry('dataset'))


def test_a_dataset_name_applies_its_preset_with_itself_as_the_dataset(
    empty_dataset_registries):
  hparams.register_dataset_preset('ScansRecipe', {
      'data': {'dataset': 'other', 'flip': False},
      'train': {'epochs': 7}})
  hparams.datasets.register_dataset_default('test_scans', ['scans'],
                                            preset='scansrecipe')
  for name in ('test_scans', 'SCANS'):
    cfg = hparams.get_config('efficientnetv2-b0', name)
    assert cfg.data.dataset == 'test_scans'
    assert cfg.data.flip is False and cfg.train.epochs == 7
  assert hparams.dataset_preset('ScansRecipe')['data']['dataset'] == 'other'


def test_a_dataset_without_a_preset_fine_tunes(empty_dataset_registries):
  hparams.datasets.register_dataset_default('test_photos')
  cfg = hparams.get_config('efficientnetv2-b0', 'test_photos')
  assert cfg.data.dataset == 'test_photos' and cfg.data.augname == 'ft'
  assert cfg.train.lr_sched == 'constant' and cfg.train.stages == 0
  # A folder of a few hundred images fills a batch, and no step minimum
  # stretches the run to hundreds of epochs.
  assert cfg.train.batch_size == 64 and cfg.train.min_steps == 0
  assert cfg.train.epochs == 15


def test_a_preset_wins_over_a_dataset_of_the_same_name(
    empty_dataset_registries):
  hparams.register_dataset_preset('Scans', {'train': {'epochs': 3}})
  hparams.datasets.register_dataset_default('scans')
  assert hparams.get_config('efficientnetv2-b0', 'scans').train.epochs == 3
  assert hparams.datasets.list_dataset_configs() == ['scans']


def test_a_dataset_name_is_registered_once(empty_dataset_registries):
  hparams.datasets.register_dataset_default('scans')
  with pytest.raises(ValueError, match="dataset 'Scans' is already"):
    hparams.datasets.register_dataset_default('other', ['Scans'])


def test_a_dataset_default_naming_an_unknown_preset_is_refused(
    empty_dataset_registries):
  with pytest.raises(UserError, match="unknown dataset config 'nope'"):
    hparams.datasets.register_dataset_default('scans', preset='nope')


def test_unknown_dataset_config_lists_presets_and_datasets_on_one_line(
    empty_dataset_registries):
  hparams.register_dataset_preset('ScansFt', {})
  hparams.datasets.register_dataset_default('test_scans', ['scans'])
  with pytest.raises(UserError) as err:
    hparams.get_config('efficientnetv2-b0', 'test_scan')
  assert str(err.value) == (
      "unknown dataset config 'test_scan'; did you mean 'test_scans'? "
      'Presets: scansft. Datasets: scans, test_scans')


def test_hparams_imports_neither_the_library_nor_the_datasets():
  code = ('import sys, hparams; hparams.get_config("efficientnetv2-b0", '
          '"digits"); print(sorted({"datasets", "efficientnetv2_tf", '
          '"tensorflow"} & set(sys.modules)))')
  result = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                          capture_output=True, text=True, check=True)
  assert result.stdout.strip() == '[]'


@pytest.mark.parametrize('isize, image_size, ratio, pixels', [
    (0.5, None, 0.5, 192), (240.0, 240, None, 240), (None, None, None, 384)])
def test_deprecated_isize_sets_the_new_keys_and_warns_once(
    isize, image_size, ratio, pixels, caplog):
  cfg = hparams.get_config('efficientnetv2-s', None, {'train.isize': isize})
  assert (cfg.train.image_size, cfg.train.image_size_ratio) == (image_size,
                                                                ratio)
  assert hparams.build_specs(cfg).data.train_image_size == pixels
  warnings = [r.getMessage() for r in caplog.records
              if 'train.isize' in r.getMessage()]
  assert len(warnings) == 1 and '\n' not in warnings[0]
  assert 'is deprecated; use train.image_size' in warnings[0]


def test_deprecated_isize_is_read_from_yaml_and_presets(tmp_path,
                                                         monkeypatch):
  old = tmp_path / 'old_run.yaml'
  old.write_text('train:\n  isize: 0.75\n')
  cfg = hparams.get_config('efficientnetv2-s', None, str(old))
  assert cfg.train.image_size is None and cfg.train.image_size_ratio == 0.75
  presets = hparams.Registry('dataset config')
  presets.add('test_old_isize', {'train': {'isize': 32.0}})
  monkeypatch.setattr(hparams.datasets, 'DATASET_PRESETS', presets)
  cfg = hparams.get_config('efficientnet-b0', 'test_old_isize')
  assert cfg.train.image_size == 32 and cfg.train.image_size_ratio is None


def test_image_size_and_its_ratio_are_alternatives_the_later_wins():
  cfg = hparams.get_config('efficientnetv2-s', None,
                           'train.image_size_ratio=0.5')  # preset: 300 px
  assert cfg.train.image_size is None
  # half of 384
  assert hparams.build_specs(cfg).data.train_image_size == 192
  cfg = hparams.get_config('efficientnet-b0', None, 'train.image_size=200')
  assert cfg.train.image_size_ratio is None
  assert hparams.build_specs(cfg).data.train_image_size == 200


@pytest.mark.parametrize('override, message', [
    ('model.num_classes=0',
     'model.num_classes must be a positive int; received: num_classes=0'),
    ('train.image_size=-3', 'train.image_size must be a positive integer or '
     'None; received: train.image_size=-3'),
    ('data.fraction=1.5', 'data.fraction must be in (0, 1]; received: 1.5'),
    ('runtime.keep_checkpoints=0', 'runtime.keep_checkpoints must be an '
     'integer >= 1; received: runtime.keep_checkpoints=0'),
])
def test_get_config_checks_ranges_with_one_line(override, message):
  with pytest.raises(UserError) as err:
    hparams.get_config('efficientnetv2-b0', None, override)
  assert str(err.value) == message


def test_the_config_keys_doc_is_rendered_from_the_specs():
  with open(os.path.join(ROOT, 'docs', 'config_keys.md')) as f:
    assert f.read() == config.render_config_keys(), (
        'regenerate docs/config_keys.md from '
        'hparams.config.render_config_keys()')


# Where the original's None means what another value means here.
_SAME_AS_NONE = {'model.conv_dropout': 0.0, 'train.sched': False,
                 'data.augname': 'none'}


def _as_here(key, value):
  return _SAME_AS_NONE.get(key, value) if value is None else value


@pytest.mark.parametrize('pair', sorted(load_presets()['configs']))
def test_each_preset_pair_resolves_to_the_original_config(pair):
  fixture = load_presets()
  model_name, dataset_cfg = pair.split()
  *values, train_size = fixture['configs'][pair]
  cfg = hparams.get_config(model_name, dataset_cfg)
  ours = {key: cfg[key.split('.')[0]][key.split('.')[1]]
          for key in fixture['keys']}
  assert ours == {key: _as_here(key, value)
                  for key, value in zip(fixture['keys'], values)}
  assert hparams.build_specs(cfg).data.train_image_size == train_size


@pytest.mark.parametrize('model_name', sorted(load_presets()['blocks']))
def test_each_model_preset_has_the_original_blocks(model_name):
  blocks = hparams.get_config(model_name).model.blocks_args
  assert [dataclasses.asdict(blockargs.decode(b)) for b in blocks] == (
      load_presets()['blocks'][model_name])


@pytest.mark.parametrize('dataset_cfg', sorted(load_presets()['datasets']))
def test_each_dataset_preset_reads_the_original_classes(dataset_cfg):
  num_classes, multi_label = load_presets()['datasets'][dataset_cfg]
  name = hparams.dataset_preset(dataset_cfg)['data']['dataset']
  dataset = datasets.DATASETS.get(name)
  assert (dataset.num_classes, dataset.multi_label) == (
      num_classes, multi_label)
