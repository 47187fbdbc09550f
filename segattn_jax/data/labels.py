"""The class names of the datasets whose labels experiment files and tasks name, kept apart from
their TFDS builders so that configs build where TensorFlow is not installed (a GPU box running a
benchmark); the builders import them from here."""
from __future__ import annotations

# `shapes` (embedded): object classes; semantic segmentation adds background as class 0.
SHAPES_CLASSES = ("circle", "square", "triangle", "star", "ring", "cross", "semicircle", "heart")
SHAPES_SEMANTIC_CLASSES = len(SHAPES_CLASSES) + 1

# PASCAL VOC: the 20 object classes after background (segmentation labels 0-20; SBD's instances
# and detection use the 20 object classes, 0-19).
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
               "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")
VOC_OBJECT_CLASSES = VOC_CLASSES[1:]
