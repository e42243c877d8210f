import pytest

import hparams
from hparams.errors import UserError


def test_layers_apply_in_order_base_model_dataset_user(monkeypatch):
  presets = hparams.Registry('dataset config')
  presets.add('test_layers_ds', {
      'model': {'num_classes': 7, 'dropout_rate': 0.5}})
  monkeypatch.setattr(hparams.datasets, 'DATASET_PRESETS', presets)
  cfg = hparams.get_config('efficientnetv2-s', 'TEST_LAYERS_DS',
                           'model.dropout_rate=0.1')
  assert cfg.model.blocks_args[0] == 'r2_k3_s1_e1_i24_o24_c1'  # model preset
  assert cfg.train.isize == 300.0 and cfg.eval.isize == 384  # model preset
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
  cfg = hparams.get_config('efficientnetv2-b0', None, 'model.dropout_rate=1')
  assert cfg.model.dropout_rate == 1.0
  assert isinstance(cfg.model.dropout_rate, float)


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
  cfg = hparams.get_config('efficientnet-b0')  # train.isize = 0.8 of 224
  assert hparams.train_image_size(cfg) == 176
  assert hparams.train_image_size(hparams.get_config('efficientnetv2-s')) == 300


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
