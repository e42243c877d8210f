import dataclasses

import pytest

import hparams
from hparams import specs
from hparams.errors import UserError
from hparams.models import V2_BASE_BLOCKS



def config_keys(cfg, prefix=''):
  for key in cfg.keys():
    if isinstance(cfg[key], type(cfg)):
      yield from config_keys(cfg[key], f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}'


def spec_keys():
  return [f.metadata['key'] for spec_type in specs.SPEC_TYPES
          for f in dataclasses.fields(spec_type) if f.metadata['key']]


def test_every_config_key_is_one_spec_field():
  keys = spec_keys()
  assert len(keys) == len(set(keys))
  assert sorted(keys) == sorted(config_keys(hparams.base_config()))


def test_every_keyed_field_says_what_it_means():
  for spec_type in specs.SPEC_TYPES:
    for f in dataclasses.fields(spec_type):
      assert not f.metadata['key'] or f.metadata['doc'], f.name


def test_base_config_defaults_are_the_spec_defaults():
  cfg = hparams.base_config()
  cfg.model.blocks_args = V2_BASE_BLOCKS
  built = specs.build_specs(cfg)
  assert built.data == specs.DataSpec()
  assert built.progressive == specs.ProgressiveSpec()
  assert built.optim == specs.OptimSpec()
  assert built.runtime == specs.RuntimeSpec()
  assert built.model == specs.ModelSpec(blocks_args=V2_BASE_BLOCKS,
                                        name='efficientnetv2-b0')


def test_unset_model_keys_take_the_argument_defaults():
  cfg = hparams.get_config('efficientnetv2-b0')
  assert cfg.model.num_classes is None and cfg.model.bn_sync is None
  spec = hparams.build_specs(cfg).model
  assert spec.num_classes == 1000 and spec.bn_sync is None
  assert spec.name == 'efficientnetv2-b0'


def test_the_saved_config_of_specs_builds_the_same_specs():
  for name in hparams.list_models():
    for preset in [None] + hparams.list_dataset_presets():
      built = hparams.get_specs(name, preset)
      again = hparams.build_specs(hparams.config_from_specs(built))
      assert again == built, (name, preset)


def test_specs_are_frozen_and_hold_tuples():
  built = hparams.build_specs(hparams.get_config(
      'efficientnetv2-s', None, 'train.stages=2,progressive.stage_epochs=1|2'))
  assert built.model.blocks_args[0] == 'r2_k3_s1_e1_i24_o24_c1'
  assert isinstance(built.model.blocks_args, tuple)
  assert built.progressive.stage_epochs == (1, 2)
  with pytest.raises(dataclasses.FrozenInstanceError):
    built.optim.epochs = 3


@pytest.mark.parametrize('model, override, pixels', [
    ('efficientnet-b0', None, 176), ('efficientnetv2-s', None, 300),
    ('efficientnetv2-s', 'train.image_size=None', 384)])
def test_data_spec_gives_the_training_size_in_pixels(model, override, pixels):
  assert hparams.get_specs(model, None, override).data.train_image_size == (
      pixels)


@pytest.mark.parametrize('spec_type, arguments, message', [
    (specs.ModelSpec, {'blocks_args': ()}, 'model.blocks_args must be a '
     'non-empty list of block strings, e.g. r1_k3_s1_e1_i32_o16_c1; '
     'received: blocks_args=()'),
    (specs.ModelSpec, {'blocks_args': V2_BASE_BLOCKS, 'bn_sync': 'yes'},
     "model.bn_sync must be True, False or None; received: bn_sync='yes'"),
    (specs.ModelSpec, {'blocks_args': V2_BASE_BLOCKS, 'num_classes': True},
     'model.num_classes must be a positive int; received: num_classes=True'),
    (specs.DataSpec, {'per_class': 0}, 'data.per_class must be a positive '
     'integer (or None for all images); received: data.per_class=0'),
    (specs.DataSpec, {'eval_image_size': 0}, 'eval.isize must be a positive '
     'integer; received: eval.isize=0'),
    (specs.ProgressiveSpec, {'stage_epochs': [3, 0]}, 'progressive.'
     'stage_epochs must be numbers > 0; received: progressive.stage_epochs='
     '[3, 0]'),
    (specs.OptimSpec, {'label_smoothing': 1.0}, 'train.label_smoothing must '
     'be in [0, 1); received: train.label_smoothing=1.0'),
    (specs.OptimSpec, {'weight_decay_inc': -1.5}, 'train.weight_decay_inc '
     'must be >= -1; received: train.weight_decay_inc=-1.5'),
    (specs.OptimSpec, {'batch_size': 'big'}, 'train.batch_size must be an '
     "integer >= 1; received: train.batch_size='big'"),
    (specs.OptimSpec, {'loss_type': 'hinge'}, 'train.loss_type must be one '
     "of softmax, sigmoid; received: train.loss_type='hinge'"),
    (specs.RuntimeSpec, {'steps_per_loop': 0}, 'runtime.steps_per_loop must '
     'be an integer >= 1; received: runtime.steps_per_loop=0'),
])
def test_a_value_out_of_range_names_its_key_what_is_allowed_and_the_value(
    spec_type, arguments, message):
  with pytest.raises(UserError) as err:
    spec_type(**arguments)
  assert str(err.value) == message


def test_architecture_changes_are_the_fields_that_fix_the_variables():
  b0 = hparams.get_specs('efficientnetv2-b0').model
  assert b0.architecture_changes(b0) == []
  assert [key for key, _, _ in b0.architecture_changes(
      hparams.get_specs('efficientnet-b3').model)] == [
          'model.model_name', 'model.blocks_args', 'model.width_coefficient',
          'model.depth_coefficient', 'model.rounding_floor']
  # Regularisation and BatchNorm settings change no variable.
  other = hparams.get_specs('efficientnetv2-b0', None,
                            'model.dropout_rate=0.5,model.bn_momentum=0.99')
  assert b0.architecture_changes(other.model) == []
