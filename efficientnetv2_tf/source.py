"""A model ready to deploy, with its input contract and class names, and
the computation every exported file carries.

`Source` comes from a training run (`export.load_run`) or from published
weights (`export.load_pretrained`). `probabilities_function(source)` is
what `model.tflite` and `model.onnx` hold, and what the 'tf' runtime runs:
float32 images `[batch, size, size, 3]` in [0, 1] at the eval size, cropped
and resized as the contract says, normalised inside, to probabilities.
"""
import dataclasses
import os
from typing import Dict, List, Optional

import tensorflow as tf

from efficientnetv2_tf.model import EfficientNet
from efficientnetv2_tf.preprocessing import unit_scale_offset
from hparams.errors import UserError
from hparams.weights import InputContract

IMAGENET_LABELS = os.path.join(os.path.dirname(__file__), 'data',
                               'imagenet1k_labels.tsv')


def _imagenet_names() -> Dict[str, str]:
  """WordNet id -> the first of its ImageNet class names, in label order."""
  with open(IMAGENET_LABELS) as f:
    pairs = [line.rstrip('\n').split('\t') for line in f]
  return {wnid: names.split(',')[0].strip() for wnid, names in pairs}


def imagenet_labels() -> List[str]:
  """The 1,000 ImageNet class names, in label order ('tench', ...)."""
  return list(_imagenet_names().values())


def readable_labels(labels: List[str]) -> List[str]:
  """ImageNet WordNet ids ('n01440764') as names ('tench'); others as is."""
  names = _imagenet_names()
  return [names.get(label, label) for label in labels]


def default_labels(num_classes: int) -> List[str]:
  """ImageNet's names for 1,000 classes, else the class numbers."""
  if num_classes == 1000:
    return imagenet_labels()
  return [str(i) for i in range(num_classes)]


@dataclasses.dataclass
class Source:
  """A model ready to export or run, with what its inputs need.

  `contract` says how an evaluation image is cropped, resized and
  normalised: a run's recipe, or the published weights' (see
  `hparams.weights`). `checkpoint` and `step` say where the weights came
  from; `weights` names the published entry ('model.tag'), if any.
  """
  model: EfficientNet
  model_name: str
  contract: InputContract
  labels: List[str]
  checkpoint: Optional[str] = None
  step: Optional[int] = None
  weights: Optional[str] = None

  def __post_init__(self):
    if len(self.labels) != self.model.num_classes:
      raise UserError(f'{len(self.labels)} labels for a model of '
                      f'{self.model.num_classes} classes')

  @property
  def image_size(self) -> int:
    return self.contract.image_size

  @property
  def normalization(self) -> str:
    return self.contract.normalization

  def at_size(self, image_size: Optional[int]) -> 'Source':
    """This source fed images of `image_size` (None: its own size)."""
    if image_size is None or image_size == self.image_size:
      return self
    return dataclasses.replace(self, contract=dataclasses.replace(
        self.contract, image_size=image_size))


def probabilities_function(source: Source,
                           batch_size: Optional[int] = None,
                           jit_compile: bool = False,
                           parts: int = 1
                           ) -> tf.types.experimental.PolymorphicFunction:
  """The deployed computation: {'probabilities': [batch, num_classes]} of
  [batch, size, size, 3] images in [0, 1], normalised as the contract says;
  `batch_size` None leaves the batch dynamic; `jit_compile` compiles it
  with XLA (for TensorFlow only: converters take it uncompiled).

  `parts` > 1 runs the batch as that many slices side by side in one graph
  (the slices differ in size by at most one image, so a batch needs at
  least `parts` images). Nothing at inference mixes the images of a
  batch, so the probabilities are the same; on a CPU it is faster (see
  `runtimes.TFRuntime`).

  The weights go in as constants, through a stateless call: converters
  read Keras 3 variables as uninitialised resources.
  """
  scale, offset = unit_scale_offset(source.normalization)
  model = source.model
  # NumPy arrays become constants of the traced graph; tensors made
  # outside it would be captured as extra inputs, which ONNX cannot take.
  trainable = [v.numpy() for v in model.trainable_variables]
  non_trainable = [v.numpy() for v in model.non_trainable_variables]
  size = source.image_size

  def logits_of(images):
    logits, _ = model.stateless_call(trainable, non_trainable,
                                     images * scale + offset,
                                     training=False)
    return logits

  @tf.function(input_signature=[tf.TensorSpec(
      [batch_size, size, size, 3], tf.float32, name='images')],
               jit_compile=jit_compile or None)
  def probabilities(images):
    # Slice i holds (n + i) // parts images: together n, in order.
    pieces = [images] if parts == 1 else tf.split(
        images, (tf.shape(images)[0] + tf.range(parts)) // parts)
    logits = tf.concat([logits_of(piece) for piece in pieces], 0)
    return {'probabilities': tf.nn.softmax(logits)}

  return probabilities


def tflite_converter(source: Source) -> tf.lite.TFLiteConverter:
  """A converter of what model.tflite holds: `probabilities_function` at
  batch 1, [1, size, size, 3] in [0, 1] -> probabilities."""
  probabilities = probabilities_function(source, batch_size=1)
  return tf.lite.TFLiteConverter.from_concrete_functions(
      [probabilities.get_concrete_function()], source.model)
