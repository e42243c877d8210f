"""Registered datasets that yield ready batches for training and evaluation.

    >>> import datasets
    >>> 'digits' in datasets.list_datasets()
    True
    >>> dataset = datasets.get_dataset('digits', per_class=5)
    >>> dataset.num_classes, dataset.split_size('train')
    (10, 50)

A new dataset is one subclass of `Dataset` (or of `TfdsDataset`,
`ImageFolder`, `TFRecordDataset`, `HeldOutArrays`) with a `name`; see
`datasets.base`. Each is a `DatasetSource`
(`efficientnetv2_tf.dataset_protocol`), all that the trainer reads.
"""
from datasets.arrays import HeldOutArrays
from datasets.base import bind
from datasets.base import Dataset
from datasets.base import DATASETS
from datasets.base import from_spec
from datasets.base import get_dataset
from datasets.base import list_datasets
from datasets.birds import Birds
from datasets.digits import Digits
from datasets.folder import ImageFolder
from datasets.imagenet import ImageNet
from datasets.imagenet import ImageNet21k
from datasets.tfds_datasets import TfdsDataset
from datasets.tfrecord import TFRecordDataset

__all__ = [
    'DATASETS', 'Dataset', 'bind', 'Birds', 'Digits', 'HeldOutArrays',
    'ImageFolder', 'ImageNet', 'ImageNet21k', 'TFRecordDataset',
    'TfdsDataset', 'from_spec', 'get_dataset', 'list_datasets',
]
