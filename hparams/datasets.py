"""Dataset presets: the config overrides that go with a dataset.

A preset is looked up case-insensitively by `--dataset_cfg`. It is applied
after the model preset and before the user's overrides, and it is the one
place a dataset's `model.num_classes` is set.
"""
from typing import Any, Dict, List, Mapping

from hparams.registry import Registry

DATASET_PRESETS: Registry = Registry('dataset config')


def register_dataset_preset(name: str, overrides: Mapping[str, Any]) -> None:
  DATASET_PRESETS.add(name, dict(overrides))


def dataset_preset(name: str) -> Dict[str, Any]:
  return DATASET_PRESETS.get(name)


def list_dataset_presets() -> List[str]:
  return DATASET_PRESETS.names()


register_dataset_preset('imagenet', {'model': {'num_classes': 1000}})
