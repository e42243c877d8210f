"""The Kaggle birds folder, written in small by the tests."""
import pytest

import datasets
from hparams.errors import UserError
from tests import image_files

SPECIES = [(f'species_{i:02d}', 'a.jpg', 'jpeg', 8, 8, 3) for i in range(25)]


def test_birds_checks_its_25_classes(tmp_path):
  image_files.write_classes(str(tmp_path / 'good' / 'training_set'),
                                  SPECIES)
  image_files.write_classes(str(tmp_path / 'good' / 'validation_set'),
                                  SPECIES[:3])
  birds = datasets.get_dataset('birds', str(tmp_path / 'good'))
  assert birds.num_classes == 25 and len(birds.class_names) == 25
  assert birds.split_size('eval') == 3
  image_files.write_classes(str(tmp_path / 'bad' / 'train'),
                                  SPECIES[:3])
  with pytest.raises(UserError, match="should have 25 classes but '.*bad' "
                     'has 3'):
    datasets.get_dataset('birds', str(tmp_path / 'bad')).class_names
