"""The 25 Indian bird species from Kaggle, read as an image folder.

The download unzips to `training_set/` and `validation_set/`, one
sub-folder per species; `ImageFolder` finds them, through any folders the
archive wraps them in, and the 25 species are checked.
"""
from datasets.folder import ImageFolder


class Birds(ImageFolder):
  """The 25-species Indian birds dataset from Kaggle, as distributed."""
  name = 'birds'
  num_classes = 25
  preset = 'BirdsFt'
  download_hint = ('Download "25 Indian bird species" from Kaggle, unzip it '
                   'and pass data_dir=PATH of the unzipped folder.')
