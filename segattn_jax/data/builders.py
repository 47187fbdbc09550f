"""Every TFDS builder of the codebase, registered by importing this module ('shapes',
'coco_instances', 'distorted_digits', 'flickr', 'visual_genome', 'imagenet_localization', 'poses',
'lsp', 'voc_segmentation', 'sbd_instances', 'stanford_background', 'synthetic_translation',
'synthetic_handwriting', 'iam_ondb'): what `tfds build NAME --imports=segattn_jax.data.builders`
and the pipeline's name lookups need."""
from segattn_jax.data import pipeline  # noqa: F401  (first: hides GPUs from TensorFlow)
from segattn_jax.data.coco_instances import CocoInstances
from segattn_jax.data.distorted_digits import DistortedDigits
from segattn_jax.data.flickr import Flickr
from segattn_jax.data.handwriting import SyntheticHandwriting
from segattn_jax.data.iam_ondb import IamOndb
from segattn_jax.data.imagenet_localization import ImagenetLocalization
from segattn_jax.data.lsp import Lsp
from segattn_jax.data.poses import Poses
from segattn_jax.data.sbd_instances import SbdInstances
from segattn_jax.data.shapes import Shapes
from segattn_jax.data.stanford_background import StanfordBackground
from segattn_jax.data.translation import SyntheticTranslation
from segattn_jax.data.visual_genome import VisualGenome
from segattn_jax.data.voc_segmentation import VocSegmentation

__all__ = ["CocoInstances", "DistortedDigits", "Flickr", "IamOndb", "ImagenetLocalization", "Lsp",
           "Poses", "SbdInstances", "Shapes", "StanfordBackground", "SyntheticHandwriting",
           "SyntheticTranslation", "VisualGenome", "VocSegmentation"]
