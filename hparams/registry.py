"""One registry pattern for models, datasets and augmentation ops.

Registering a name twice is an error; looking up an unknown name raises a
`UserError` that lists the known names and the closest match.

    >>> optimizers = Registry('optimizer')
    >>> @optimizers.register('sgd')
    ... def make_sgd(): ...
    >>> optimizers.get('SGD') is make_sgd
    True
    >>> optimizers.get('sdg')  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    hparams.errors.UserError: unknown optimizer 'sdg'; did you mean 'sgd'? ...
"""
import difflib
from typing import Any, Callable, Dict, Generic, Iterable, List, TypeVar

from hparams.errors import UserError

T = TypeVar('T')


def close_matches(name: str, candidates: Iterable[str], n: int = 1) -> List[str]:
  """Up to `n` candidates most similar to `name`, best first."""
  return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.6)


def unknown_name_message(kind: str, name: Any, known: Iterable[str]) -> str:
  """One line: the unknown value, the closest known one, and all known ones."""
  known = sorted(known)
  hint = close_matches(str(name), known)
  did_you_mean = f"; did you mean '{hint[0]}'?" if hint else ''
  return f"unknown {kind} {name!r}{did_you_mean} Known: {', '.join(known)}"


class Registry(Generic[T]):
  """Maps names to objects. Names are matched case-insensitively."""

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: Dict[str, T] = {}

  def add(self, name: str, obj: T) -> T:
    key = name.lower()
    if key in self._entries:
      raise ValueError(f'{self.kind} {name!r} is already registered')
    self._entries[key] = obj
    return obj

  def register(self, name: str) -> Callable[[T], T]:
    """Decorator form of `add`."""
    return lambda obj: self.add(name, obj)

  def get(self, name: str) -> T:
    if not isinstance(name, str) or name.lower() not in self._entries:
      raise UserError(unknown_name_message(self.kind, name, self._entries))
    return self._entries[name.lower()]

  def __contains__(self, name: str) -> bool:
    return isinstance(name, str) and name.lower() in self._entries

  def names(self) -> List[str]:
    return sorted(self._entries)
