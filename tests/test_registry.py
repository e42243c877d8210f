import pytest

from hparams.errors import UserError
from hparams.registry import Registry


def test_registered_name_is_found_case_insensitively():
  reg = Registry('thing')
  reg.add('FashionMnist', 1)
  assert reg.get('fashionmnist') == 1
  assert 'FASHIONMNIST' in reg


def test_duplicate_registration_raises():
  reg = Registry('thing')
  reg.add('a', 1)
  with pytest.raises(ValueError, match="thing 'A' is already registered"):
    reg.add('A', 2)


def test_unknown_name_lists_known_names_and_closest_match():
  reg = Registry('optimizer')
  for name in ('sgd', 'rmsprop', 'adam'):
    reg.add(name, name)
  with pytest.raises(UserError) as err:
    reg.get('rmsprob')
  message = str(err.value)
  assert "unknown optimizer 'rmsprob'" in message
  assert "did you mean 'rmsprop'?" in message
  assert 'Known: adam, rmsprop, sgd' in message
  assert '\n' not in message
