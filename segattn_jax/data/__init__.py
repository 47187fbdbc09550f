"""Datasets and the input pipeline (the only place TensorFlow runs).

Importing the package imports nothing else, so that TensorFlow-free pieces (`labels`, `captions`,
`embedded`) serve configs and tasks where TensorFlow is absent. `data.pipeline` (the input
pipeline) imports `data.builders`, which registers every TFDS builder by name.
"""
