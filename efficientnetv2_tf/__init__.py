"""EfficientNet V1 and V2 in Keras 3 / TensorFlow 2.

    >>> import efficientnetv2_tf
    >>> model = efficientnetv2_tf.get_model(
    ...     'efficientnetv2-b0', 'num_classes=10,width_coefficient=0.25')
    >>> images = keras.random.uniform((2, 64, 64, 3), -1, 1)  # in [-1, 1]
    >>> tuple(model(images, training=False).shape)
    (2, 10)
"""
from efficientnetv2_tf import checkpoints
from efficientnetv2_tf import official
from efficientnetv2_tf.blockargs import BlockArgs
from efficientnetv2_tf.blockargs import decode as decode_block
from efficientnetv2_tf.blockargs import encode as encode_block
from efficientnetv2_tf.loading import get_model
from efficientnetv2_tf.loading import list_models
from efficientnetv2_tf.loading import load_weights
from efficientnetv2_tf.loading import weights_info
from efficientnetv2_tf.model import EfficientNet
from efficientnetv2_tf.preprocessing import Normalize
from hparams.errors import UserError

__all__ = [
    'BlockArgs', 'EfficientNet', 'Normalize', 'UserError', 'checkpoints',
    'decode_block', 'encode_block', 'get_model', 'list_models',
    'load_weights', 'official', 'weights_info',
]
