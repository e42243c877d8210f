"""What predict reads: the image files of a directory or a glob."""
import os

import pytest

from app import inference
from hparams.errors import UserError
from tests import image_files


@pytest.fixture
def folder(tmp_path):
  image_files.write_predict_folder(str(tmp_path))
  return tmp_path


def test_image_files_walks_folders_and_matches_globs(folder):
  assert [os.path.relpath(p, folder) for p in inference.image_files(
      str(folder))] == ['a/one.jpg', 'b/broken.jpg', 'b/two.PNG']
  assert inference.image_files(str(folder / '*' / 'one.jpg')) == [
      str(folder / 'a' / 'one.jpg')]


def test_image_path_matching_nothing_names_the_argument(tmp_path):
  with pytest.raises(UserError, match=r"^image_path '.*\*\.jpg' matches no "
                     'image file'):
    inference.image_files(str(tmp_path / '*.jpg'))
