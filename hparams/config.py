"""The run configuration: a locked `ml_collections.ConfigDict`, overridden.

A config is built in layers, each overriding the one before:

    base_config()  ->  model preset  ->  dataset preset  ->  user overrides

User overrides are a dict, or a string of `section.key=value` pairs and
YAML file paths, comma-separated and applied in order
(`'hparams/recipes/paper_table6_s.yaml,train.epochs=30'`). Values are
parsed as in the original code: `a|b|c` makes a list, `true`/`false` are
booleans, Python literals are evaluated, anything else stays a string:

    >>> cfg = base_config()
    >>> override(cfg, 'train.epochs=10,model.dropout_rate=0.3')
    >>> cfg.train.epochs, cfg.model.dropout_rate
    (10, 0.3)

Unknown keys and values of the wrong type raise `UserError`, naming the key
and the closest valid ones. `num_classes` lives in `model.num_classes` only;
left unset, a run takes it from its dataset (`data.dataset`).

Keys that mirror the original code keep its short names; they are:
`train.isize`/`eval.isize` (image size in pixels; a train size <= 16 is a
fraction of the eval size), `data.ram` (RandAugment magnitude), `data.ibase`
(first-stage image size in progressive learning), `train.sched` (whether
progressive stages also schedule regularisation), `train.gclip` (gradient
clipping norm, 0 for none).
"""
import ast
import copy
import functools
import os
import re
from typing import Any, Dict, Mapping, Optional, Union

import ml_collections
from ml_collections import config_dict
import yaml

from hparams.errors import UserError
from hparams.registry import close_matches

Overrides = Union[None, str, Mapping[str, Any]]


def base_config() -> ml_collections.ConfigDict:
  """The defaults every run starts from, before any preset. Keys are locked."""
  cfg = ml_collections.ConfigDict({
      'model': {
          'model_name': 'efficientnetv2-b0',
          # Block strings, one per stage; see `efficientnetv2_tf.blockargs`.
          'blocks_args': [],
          'width_coefficient': 1.0,
          'depth_coefficient': 1.0,
          'dropout_rate': 0.2,  # before the classifier
          'survival_prob': 0.8,  # of the last block; 1.0 disables it
          'feature_size': 1280,  # head channels before width scaling
          'depth_divisor': 8,
          'min_depth': 8,
          # Channel rounding may not lose more than 1 - this; V1 used 0.9.
          'rounding_floor': 0.0,
          'act_fn': 'silu',
          'bn_momentum': 0.9,
          'bn_epsilon': 1e-3,
          'conv_dropout': 0.0,
          'headbias': config_dict.placeholder(float),
          # None: from the dataset or the checkpoint, else 1000 (ImageNet).
          'num_classes': config_dict.placeholder(int),
          # Cross-replica BatchNorm statistics. None: on under TPUStrategy,
          # as the original's tpu_bn; off elsewhere.
          'bn_sync': config_dict.placeholder(bool),
      },
      'train': {
          'epochs': 350,
          'batch_size': 4096,
          'isize': config_dict.placeholder(float),
          'stages': 0,
          'sched': False,
          'optimizer': 'rmsprop',
          'lr_sched': 'exponential',
          'lr_base': 0.016,
          'lr_decay_epoch': 2.4,
          'lr_decay_factor': 0.97,
          'lr_warmup_epoch': 5.0,
          'lr_min': 0.0,
          'min_steps': 0,  # epochs grow until training has this many steps
          'ema_decay': 0.9999,
          'weight_decay': 1e-5,
          'weight_decay_inc': 0.0,
          'weight_decay_exclude': '.*(bias|gamma|beta).*',
          'label_smoothing': 0.1,
          # softmax: cross-entropy, multi-hot labels divided by their sum,
          # as the original; sigmoid: per-class binary cross-entropy.
          'loss_type': 'softmax',
          'gclip': 0.0,
          'ft_init_ckpt': config_dict.placeholder(str),
          'ft_init_ema': True,
          'freeze_epochs': 0.0,  # train only the classifier at first
          'plateau_patience': 2,  # evals without improvement (lr_sched=plateau)
          'plateau_factor': 0.5,
          'early_stop_patience': 0,  # evals without improvement; 0 never stops
          'grad_accum_steps': 1,
          'jit_compile': False,
      },
      # Progressive learning (train.stages > 1): per stage, the image size
      # grows from data.ibase and, with train.sched, RandAugment magnitude,
      # mixup, cutmix and dropout grow from these minimums to their values.
      'progressive': {
          'schedule': 'code',  # code (the original code's) | paper (Table 6)
          'stage_epochs': [],  # epochs per stage; empty: equal stages
          'ram_min': 5.0,
          'mixup_min': 0.0,
          'cutmix_min': 0.0,
          'dropout_min': 0.1,  # the 'code' schedule keeps dropout fixed
      },
      'runtime': {
          'steps_per_loop': 1,  # training steps per tf.function call
          'checkpoint_every_steps': 0,  # 0: at every epoch end only
          'keep_checkpoints': 3,
          'mixed_precision': False,  # bfloat16 on CPU/TPU, float16 on GPU
          'log_every_steps': 0,  # 0: a progress bar per epoch
      },
      'eval': {
          'batch_size': 8,
          'isize': 224,
      },
      'data': {
          'dataset': 'imagenet',  # a name from `datasets.list_datasets()`
          'data_dir': config_dict.placeholder(str),  # --data_dir wins
          'train_split': 'train',
          'eval_split': 'eval',
          'per_class': config_dict.placeholder(int),  # at most N per class
          'fraction': 1.0,  # of each split
          'val_fraction': 0.2,  # held out where a source has no eval split
          'seed': config_dict.placeholder(int),  # repeatable order and aug
          'strict': False,  # fail on an unreadable image instead of skipping
          'cache': 'auto',  # auto | memory | none
          'shuffle_buffer': 16384,
          'flip': True,  # random horizontal flips in training
          'augname': 'randaug',
          # False: augmentation ops compute what the original's do, quirks
          # included; True: the corrected ops (see efficientnetv2_tf.augment).
          'augment_fixes': False,
          # symmetric | inception | imagenet (see hparams.weights). None:
          # the recipe's, or the named weights' when fine-tuning from them.
          'normalization': config_dict.placeholder(str),
          'ra_num_layers': 2,
          'ram': 15.0,
          'mixup_alpha': 0.0,
          'cutmix_alpha': 0.0,
          'ibase': 128,
      },
  })
  cfg.lock()
  return cfg


def train_image_size(cfg: ml_collections.ConfigDict) -> int:
  """The training image size; a `train.isize` <= 16 is a fraction of eval's."""
  size = cfg.train.isize
  if size is None:
    return cfg.eval.isize
  if size <= 16:
    return int(cfg.eval.isize * size) // 16 * 16
  return int(size)


def parse_value(text: str) -> Any:
  """Parses one override value: `a|b` is a list, `true`/`false` are bools."""
  text = text.strip()
  if '|' in text:
    return [parse_value(part) for part in text.split('|')]
  if text in ('true', 'false'):
    return text == 'true'
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


# A comma separates pairs only when a `key=` follows it, so that values such
# as `[1,2]` stay whole.
_PAIR_SEPARATOR = re.compile(r',(?=\s*[A-Za-z_][\w.]*\s*=)')


def parse_overrides(text: str) -> Dict[str, Any]:
  """Parses `'a.b=1,c=x|y'` into `{'a.b': 1, 'c': ['x', 'y']}`."""
  pairs = {}
  for item in _PAIR_SEPARATOR.split(text.strip()):
    if not item.strip():
      continue
    key, sep, value = item.partition('=')
    if not sep or not key.strip():
      raise UserError(
          f"malformed override {item!r}: expected 'key=value' pairs separated "
          "by commas, e.g. 'train.epochs=10,model.dropout_rate=0.3'")
    pairs[key.strip()] = parse_value(value)
  return pairs


def load_yaml(path: str) -> Dict[str, Any]:
  if not os.path.isfile(path):
    raise UserError(f'config file {path!r} does not exist')
  with open(path) as f:
    try:
      content = yaml.safe_load(f)
    except yaml.YAMLError as e:
      raise UserError(f'config file {path!r} is not valid YAML: {e}') from None
  if content is None:
    return {}
  if not isinstance(content, dict):
    raise UserError(f'config file {path!r} must hold a mapping of sections, '
                    f'not a {type(content).__name__}')
  return content


def to_yaml(cfg: ml_collections.ConfigDict) -> str:
  return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def save_yaml(cfg: ml_collections.ConfigDict, path: str) -> None:
  with open(path, 'w') as f:
    f.write(to_yaml(cfg))


# Between overrides, a comma also comes before a YAML file path.
_ITEM_SEPARATOR = re.compile(
    r',(?=\s*(?:[A-Za-z_][\w.]*\s*=|[^,=]*\.ya?ml\s*(?:,|$)))')


def _is_yaml_path(item: str) -> bool:
  return item.endswith(('.yaml', '.yml')) and '=' not in item


def _flatten(mapping: Mapping[str, Any], prefix: str = '') -> Dict[str, Any]:
  """Nested sections as dotted keys, so that two files that set keys of the
  same section both keep theirs."""
  flat = {}
  for key, value in mapping.items():
    if isinstance(value, Mapping):
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def as_mapping(overrides: Overrides) -> Mapping[str, Any]:
  """Overrides in any accepted form as a (possibly dotted-key) mapping.

  A string's items, `key=value` pairs and YAML file paths, apply in order:
  a later item wins over an earlier one that sets the same key.
  """
  if overrides is None:
    return {}
  if isinstance(overrides, Mapping):
    return overrides
  if isinstance(overrides, str):
    items = [item.strip() for item in _ITEM_SEPARATOR.split(overrides)]
    items = [item for item in items if item]
    if all(_is_yaml_path(item) or '=' in item for item in items):
      merged = {}
      for item in items:
        merged.update(_flatten(load_yaml(item)) if _is_yaml_path(item)
                      else parse_overrides(item))
      return merged
  raise UserError(
      "overrides must be a dict, a YAML file path or 'key=value,...' pairs; "
      f'received: {overrides!r}')


def _leaf_paths(cfg: ml_collections.ConfigDict, prefix: str = ''):
  for key in cfg.keys():
    value = cfg[key]
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaf_paths(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}'


def _unknown_key(path: str, root: ml_collections.ConfigDict) -> UserError:
  """Names the unknown key and up to three valid keys that look like it."""
  valid = list(_leaf_paths(root))
  hints = close_matches(path, valid, n=3)
  if not hints:  # a misspelt key in the wrong section: match the last part
    by_leaf = {p.rsplit('.', 1)[-1]: p for p in valid}
    hints = [by_leaf[leaf] for leaf in
             close_matches(path.rsplit('.', 1)[-1], by_leaf)]
  hint = f"; closest valid: {', '.join(hints)}" if hints else ''
  return UserError(f'unknown config key {path!r}{hint}')


_TYPE_NAMES = {bool: 'a bool (true/false)', int: 'an int', float: 'a number',
               str: 'a string', list: 'a list (a|b|c)'}


@functools.lru_cache(maxsize=1)
def _optional_paths() -> frozenset:
  """The keys whose default is None: the only ones that may be set to None."""
  cfg = base_config()
  return frozenset(p for p in _leaf_paths(cfg)
                   if functools.reduce(getattr, p.split('.'), cfg) is None)


def _coerce(path: str, field_type: type, value: Any) -> Any:
  """Checks `value` against the field's type; returns the value to store."""
  if field_type is type(None) or (value is None and
                                  path in _optional_paths()):
    return value
  ok = True
  if field_type is bool:
    ok = isinstance(value, bool)
  elif field_type is int:
    ok = isinstance(value, int) and not isinstance(value, bool)
  elif field_type is float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    value = float(value) if ok else value
  elif field_type is str:
    ok = isinstance(value, str)
  elif field_type is list:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
      value = [value]
    ok = isinstance(value, (list, tuple))
    value = list(value) if ok else value
  if not ok or value is None:
    expected = _TYPE_NAMES.get(field_type, field_type.__name__)
    raise UserError(f'{path}={value!r} has the wrong type: expected '
                    f'{expected}, got {type(value).__name__}')
  return value


def _apply(root: ml_collections.ConfigDict, section: ml_collections.ConfigDict,
           prefix: str, updates: Mapping[str, Any]) -> None:
  for raw_key, value in updates.items():
    head, _, rest = str(raw_key).partition('.')
    path = prefix + head
    if head not in section:
      raise _unknown_key(path + ('.' + rest if rest else ''), root)
    current = section[head]
    if isinstance(current, ml_collections.ConfigDict):
      if rest:
        _apply(root, current, path + '.', {rest: value})
      elif isinstance(value, Mapping):
        _apply(root, current, path + '.', value)
      else:
        raise UserError(f'{path!r} is a section; set one of its keys, e.g. '
                        f'{path}.{next(iter(current.keys()))}=...')
    elif rest:
      raise _unknown_key(path + '.' + rest, root)
    else:
      section[head] = _coerce(path, section.get_type(head), value)


def override(cfg: ml_collections.ConfigDict, overrides: Overrides) -> None:
  """Applies overrides in place; see the module docstring for the forms."""
  _apply(cfg, cfg, '', as_mapping(overrides))


def resolve(model_preset: Optional[Mapping[str, Any]] = None,
            dataset_preset: Optional[Mapping[str, Any]] = None,
            *user_overrides: Overrides) -> ml_collections.ConfigDict:
  """Builds a config from the base and the given layers, in order."""
  cfg = base_config()
  for layer in (model_preset, dataset_preset, *user_overrides):
    override(cfg, copy.deepcopy(layer) if isinstance(layer, Mapping) else layer)
  return cfg
