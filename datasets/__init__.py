"""Registered datasets that yield ready batches for training and evaluation.

    >>> import datasets
    >>> 'digits' in datasets.list_datasets()
    True
    >>> dataset = datasets.get_dataset('digits', per_class=5)
    >>> dataset.num_classes, dataset.split_size('train')
    (10, 50)

A new dataset is one subclass of `Dataset` (or of `TfdsDataset`,
`ImageFolder`, `TFRecordDataset`) with a `name`; see `datasets.base`.
"""
from datasets.base import bind
from datasets.base import Dataset
from datasets.base import DATASETS
from datasets.base import from_config
from datasets.base import get_dataset
from datasets.base import list_datasets
from datasets.digits import Digits
from datasets.folder import ImageFolder
from datasets.imagenet import TFRecordDataset
from datasets.tfds_datasets import TfdsDataset

__all__ = [
    'DATASETS', 'Dataset', 'bind', 'Digits', 'ImageFolder', 'TFRecordDataset',
    'TfdsDataset', 'from_config', 'get_dataset', 'list_datasets',
]
