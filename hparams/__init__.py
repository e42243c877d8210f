"""Configuration: the base config, model and dataset presets, overrides.

    >>> import hparams
    >>> cfg = hparams.get_config('efficientnetv2-s', None, 'train.epochs=10')
    >>> cfg.model.blocks_args[0], cfg.train.epochs
    ('r2_k3_s1_e1_i24_o24_c1', 10)
"""
from typing import Optional

import ml_collections

from hparams.config import as_mapping
from hparams.config import base_config
from hparams.config import load_yaml
from hparams.config import override
from hparams.config import Overrides
from hparams.config import parse_overrides
from hparams.config import parse_value
from hparams.config import resolve
from hparams.config import save_yaml
from hparams.config import to_yaml
from hparams.datasets import dataset_preset
from hparams.datasets import list_dataset_presets
from hparams.datasets import register_dataset_preset
from hparams.errors import UserError
from hparams.models import list_models
from hparams.models import model_preset
from hparams.registry import Registry
from hparams.specs import build_specs
from hparams.specs import config_values
from hparams.specs import ModelSpec
from hparams.specs import Specs
from hparams.weights import InputContract
from hparams.weights import list_published
from hparams.weights import published_weights
from hparams.weights import PublishedWeights


def get_config(model_name: str = 'efficientnetv2-b0',
               dataset_cfg: Optional[str] = None,
               *overrides: Overrides) -> ml_collections.ConfigDict:
  """Base config, then the model preset, the dataset preset, the overrides.

  The result is checked by building its specs (`build_specs`): a value out
  of range raises `UserError` here, naming the key.
  """
  cfg = resolve(model_preset(model_name),
                dataset_preset(dataset_cfg) if dataset_cfg else None,
                *overrides)
  build_specs(cfg)
  return cfg


def get_specs(model_name: str = 'efficientnetv2-b0',
              dataset_cfg: Optional[str] = None,
              *overrides: Overrides) -> Specs:
  """The specs of `get_config(model_name, dataset_cfg, *overrides)`.

      >>> specs = get_specs('efficientnetv2-s', None, 'train.epochs=10')
      >>> specs.model.blocks_args[0], specs.optim.epochs
      ('r2_k3_s1_e1_i24_o24_c1', 10)
  """
  return build_specs(resolve(
      model_preset(model_name),
      dataset_preset(dataset_cfg) if dataset_cfg else None, *overrides))


def config_from_specs(specs: Specs) -> ml_collections.ConfigDict:
  """The config whose specs are `specs`, through the strict chain: what a
  run saves as config.yaml."""
  return resolve(None, None, config_values(specs))
