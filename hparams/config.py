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

Keys that mirror the original code keep its short names (`eval.isize`,
`data.ram`, `data.ibase`, `train.sched`, `train.gclip`); docs/config_keys.md
maps every key to the spec field that holds it (`hparams.specs`).
`train.isize` is a deprecated alias: a value <= 16 sets
`train.image_size_ratio`, a larger one `train.image_size`, with a warning.
"""
import ast
import copy
import dataclasses
import functools
import logging
import os
import re
import typing
from typing import Any, Dict, Mapping, Optional, Union

import ml_collections
from ml_collections import config_dict
import yaml

from hparams import specs
from hparams.errors import UserError
from hparams.registry import close_matches

Overrides = Union[None, str, Mapping[str, Any]]
_LOG = logging.getLogger(__name__)


def base_config() -> ml_collections.ConfigDict:
  """The defaults every run starts from, before any preset. Keys are locked.

  They are the spec fields' defaults (`hparams.specs`); docs/config_keys.md
  says what each key means.
  """
  sections = {}
  for spec_type in specs.SPEC_TYPES:
    for field in dataclasses.fields(spec_type):
      if field.metadata['key']:
        section, key = field.metadata['key'].split('.')
        value = field.metadata['config_default']
        if value is None:  # a typed placeholder, which only None may unset
          value = config_dict.placeholder(_config_type(spec_type, field))
        elif isinstance(value, tuple):
          value = list(value)
        sections.setdefault(section, {})[key] = value
  cfg = ml_collections.ConfigDict(sections)
  cfg.lock()
  return cfg


def _config_type(spec_type: type, field: dataclasses.Field) -> type:
  """The type a config key holds: a field's Optional[X] as X, and its
  Tuple[X, ...] as list."""
  hint = typing.get_type_hints(spec_type)[field.name]
  if typing.get_origin(hint) is Union:
    hint = next(a for a in typing.get_args(hint) if a is not type(None))
  return list if typing.get_origin(hint) is tuple else hint


# Keys that say the same thing two ways: setting one (to other than None)
# unsets the other, so that a later layer's choice wins whole.
_ALTERNATIVES = {'train.image_size': 'image_size_ratio',
                 'train.image_size_ratio': 'image_size'}


def _isize_keys(value: Any) -> Dict[str, Any]:
  """The keys that replace the deprecated `train.isize`: a number <= 16 was
  a fraction of the eval size, a larger one pixels, None the eval size."""
  if value is None:
    keys = {'image_size': None, 'image_size_ratio': None}
  elif isinstance(value, (int, float)) and not isinstance(value, bool) and (
      value <= 16):
    keys = {'image_size_ratio': value}
  else:
    keys = {'image_size': int(value) if isinstance(value, float) else value}
  use = ','.join(f'train.{k}={v}' for k, v in keys.items())
  _LOG.warning('config key train.isize is deprecated; use %s', use)
  return keys


# Deprecated key: the function that gives the keys of its section that
# replace it.
_DEPRECATED = {'train.isize': _isize_keys}


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


def parse_overrides(text: str, alternatives: bool = False
                    ) -> Dict[str, Any]:
  """Parses `'a.b=1,c=x|y'` into `{'a.b': 1, 'c': ['x', 'y']}`; with
  `alternatives`, each value is the list of those `|` separates,
  `{'a.b': [1], 'c': ['x', 'y']}`, so that a list value (`[1,2]`) is one
  of them, not two."""
  pairs = {}
  for item in _PAIR_SEPARATOR.split(text.strip()):
    if not item.strip():
      continue
    key, sep, value = item.partition('=')
    if not sep or not key.strip():
      raise UserError(
          f"malformed override {item!r}: expected 'key=value' pairs separated "
          "by commas, e.g. 'train.epochs=10,model.dropout_rate=0.3'")
    pairs[key.strip()] = ([parse_value(part) for part in value.split('|')]
                          if alternatives else parse_value(value))
  return pairs


def load_yaml(path: str) -> Dict[str, Any]:
  if not os.path.isfile(path):
    raise UserError(f'config file {path!r} does not exist')
  with open(path) as f:
    try:
      content = yaml.safe_load(f)
    except yaml.YAMLError as e:
      raise UserError(f'config file {path!r} is not valid YAML: '
                      f'{" ".join(str(e).split())}') from None
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
    if path in _DEPRECATED and not rest:
      _apply(root, section, prefix, _DEPRECATED[path](value))
      continue
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
      if path in _ALTERNATIVES and value is not None:
        section[_ALTERNATIVES[path]] = None


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


def render_config_keys() -> str:
  """docs/config_keys.md: every config key, its spec field and meaning."""
  lines = ['# Config keys', '',
           'Every key of the run config, the spec field that holds it '
           '(`hparams.specs`) and what it means.',
           'Generated by `hparams.config.render_config_keys()`. The '
           'deprecated `train.isize` sets `train.image_size_ratio` when it is '
           '<= 16, else `train.image_size`.', '',
           '| Config key | Spec field | Meaning |',
           '| --- | --- | --- |']
  rows = sorted(
      (f.metadata['key'], f'{spec_type.__name__}.{f.name}', f.metadata['doc'])
      for spec_type in specs.SPEC_TYPES for f in dataclasses.fields(spec_type)
      if f.metadata['key'])
  lines += [f'| `{key}` | `{field}` | {doc} |' for key, field, doc in rows]
  return '\n'.join(lines) + '\n'
