"""Top-k predictions of image files, from a loaded model, a run or an
export."""
import os

import pytest
import tensorflow as tf

from app import inference
import efficientnetv2_tf
from efficientnetv2_tf import export
from efficientnetv2_tf import predict
from hparams.errors import UserError
from hparams.weights import recipe_contract
from tests import image_files
from tests.conftest import TINY


@pytest.fixture
def folder(tmp_path):
  image_files.write_predict_folder(str(tmp_path))
  return tmp_path


def test_top_k_below_one_names_the_argument(folder):
  with pytest.raises(UserError, match=r'^top_k must be >= 1; received: 0$'):
    predict.predict(str(folder), [str(folder / 'a' / 'one.jpg')], top_k=0)


def test_a_directory_that_is_neither_export_nor_run_is_refused(folder):
  with pytest.raises(UserError, match='is neither an export'):
    predict.classifier(str(folder))


def test_predict_ranks_readable_images_and_reports_the_others(folder):
  model = efficientnetv2_tf.get_model('efficientnetv2-b0', TINY,
                                      training=False)
  source = export.Source(model, model.name, recipe_contract('default', 32),
                         [f'class {i}' for i in range(10)])
  rows = predict.predict(source, inference.image_files(str(folder)), top_k=3)
  assert [os.path.basename(r['file']) for r in rows] == [
      'one.jpg', 'broken.jpg', 'two.PNG']
  assert rows[1]['error'].startswith('unreadable image: ')
  probabilities = [p['probability'] for p in rows[0]['top_k']]
  assert len(probabilities) == 3 and probabilities == sorted(
      probabilities, reverse=True)
  assert inference.describe(rows[0]).startswith(
      f'{rows[0]["file"]}: class ')
  assert inference.describe(rows[1]) == (f'{rows[1]["file"]}: error: '
                                         f'{rows[1]["error"]}')


def test_an_unreadable_image_is_named_by_what_the_decoder_said():
  # As TensorFlow reports it from an op run eagerly and from a traced
  # function: the decoder's words only, not frames or node names.
  broken = tf.constant([b'\xff\xd8\xff\xe0 not a jpeg'])
  decode = lambda b: tf.io.decode_image(b[0], channels=3,
                                        expand_animations=False)
  for run in (decode, tf.function(decode)):
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
      run(broken)
    assert predict.reason(error.value) == (
        'jpeg::Uncompress failed. Invalid JPEG data or crop window.')
