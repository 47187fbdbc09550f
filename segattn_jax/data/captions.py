"""Caption text: normalization, the vocabulary (built from the training captions, saved in the
workdir beside the checkpoints) and the tensors the captioning preprocessor makes from it.

Normalization follows Karpathy's preprocessing that Show, Attend and Tell's reference code reads:
lower case, punctuation dropped, split on white space. The same pattern runs in TensorFlow (the
input pipeline) and in Python (vocabulary building), so the two cannot disagree.
"""
from __future__ import annotations

import collections
import re
from typing import Iterable

import jax
import numpy as np
from absl import logging
from etils import epath

# Everything but lower-case letters, digits and spaces becomes a space (RE2 and Python `re` alike).
_DROP = r"[^a-z0-9 ]"
PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIAL = (PAD, START, END, UNK)  # ids 0..3, in this order
VOCABULARY_FILE = "vocabulary.txt"


def words(text: str) -> list[str]:
    """'A red circle, above...' -> ['a', 'red', 'circle', 'above']."""
    return re.sub(_DROP, " ", text.lower()).split()


def caption_texts(example: dict) -> object:
    """An example's reference sentences (a 1-D string tensor/array): `captions/text` (COCO
    captions, Flickr) or the single `caption` (shapes)."""
    if "captions" in example:
        return example["captions"]["text"]
    if "caption" in example:
        import tensorflow as tf

        return tf.reshape(example["caption"], [1])
    raise ValueError(f"The dataset has no 'caption' or 'captions' feature (it has "
                     f"{sorted(example)}); captioning needs one.")


def phrase_texts(example: dict) -> object:
    """An example's region phrases (dense captioning): `objects/phrase`, one per box."""
    if "phrase" not in example.get("objects", {}):
        raise ValueError(f"The dataset has no 'objects/phrase' feature (it has {sorted(example)}); "
                         "dense captioning needs one phrase per region box.")
    return example["objects"]["phrase"]


class Vocabulary:
    """Words <-> ids: the special tokens first, then words by decreasing training count."""

    def __init__(self, tokens: Iterable[str]):
        self.tokens = tuple(tokens)
        if self.tokens[:len(SPECIAL)] != SPECIAL:
            raise ValueError(f"A vocabulary starts with {SPECIAL}; got {self.tokens[:4]}.")
        self.ids = {token: i for i, token in enumerate(self.tokens)}
        self.pad, self.start, self.end, self.unk = range(len(SPECIAL))

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(cls, sentences: Iterable[str], min_count: int = 5) -> Vocabulary:
        """Every word seen at least `min_count` times (the reference's threshold is 5)."""
        counts = collections.Counter(w for sentence in sentences for w in words(sentence))
        kept = sorted((w for w, n in counts.items() if n >= min_count),
                      key=lambda w: (-counts[w], w))
        return cls(SPECIAL + tuple(kept))

    def encode(self, sentence: str) -> list[int]:
        return [self.ids.get(w, self.unk) for w in words(sentence)]

    def decode(self, ids: Iterable[int]) -> str:
        """Ids up to the first <end> as a sentence, without special tokens."""
        out = []
        for i in ids:
            if int(i) == self.end:
                break
            if int(i) >= len(SPECIAL):
                out.append(self.tokens[int(i)])
        return " ".join(out)

    def save(self, directory: str | epath.Path) -> epath.Path:
        path = epath.Path(directory) / VOCABULARY_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(self.tokens) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | epath.Path) -> Vocabulary:
        path = epath.Path(directory) / VOCABULARY_FILE
        if not path.exists():
            raise FileNotFoundError(
                f"{path} is missing: this workdir's captioning model needs the vocabulary it was "
                "trained with. Train in this --workdir first (training writes it), or copy the "
                "training run's vocabulary.txt here.")
        return cls(path.read_text().splitlines())

    def table(self):
        """A TensorFlow word -> id lookup (unknown words -> <unk>) for the input pipeline."""
        import tensorflow as tf

        return tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(self.tokens),
                                                tf.range(len(self.tokens), dtype=tf.int64)),
            default_value=self.unk)


class CaptionEncoder:
    """Sentences -> fixed-length id tensors in TensorFlow: <start> w1 .. wn <end> <pad>..., at most
    `max_length` words (longer captions are truncated; `vocabulary_for_run` logs how many).
    Built eagerly, outside tf.data's traced functions, which then share its lookup table."""

    def __init__(self, vocabulary: Vocabulary, max_length: int):
        if max_length < 1:
            raise ValueError(f"max_length={max_length} must be at least 1 word.")
        self.vocabulary, self.max_length = vocabulary, max_length
        self._table = vocabulary.table()

    @staticmethod
    def words(text):
        """A string tensor (any shape) -> its words, as `words` splits them (ragged)."""
        import tensorflow as tf

        return tf.strings.split(tf.strings.regex_replace(tf.strings.lower(text), _DROP, " "))

    def encode(self, text):
        """A scalar string tensor -> int32 (max_length + 2,)."""
        import tensorflow as tf

        ids = self._table.lookup(self.words(text))[:self.max_length]
        v = self.vocabulary
        ids = tf.concat([[v.start], ids, [v.end]], axis=0)
        ids = tf.pad(ids, [[0, self.max_length + 2 - tf.shape(ids)[0]]], constant_values=v.pad)
        return tf.ensure_shape(tf.cast(ids, tf.int32), [self.max_length + 2])


def training_sentences(builder, split: str, texts=caption_texts) -> list[str]:
    """Every sentence `texts(example)` gives in `split` (decoded), read once to build the
    vocabulary."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    ds = builder.as_dataset(split=split, shuffle_files=False)
    ds = ds.map(texts, num_parallel_calls=tf.data.AUTOTUNE)
    return [s.decode() for batch in tfds.as_numpy(ds) for s in np.atleast_1d(batch)]


def vocabulary_for_run(workdir: str | epath.Path, sources, *, min_count: int, max_length: int,
                       create: bool, texts=caption_texts) -> Vocabulary:
    """The run's vocabulary: the workdir's if it has one; else (when `create`, i.e. training)
    built from the sentences `texts` gives (captions, or dense captioning's region phrases) in
    every training source, (builder, split) pairs (`pipeline.training_sources`: COCO's restval
    counts as Karpathy's do), and saved there. Logs how many the preprocessor will truncate to
    `max_length` words."""
    if (epath.Path(workdir) / VOCABULARY_FILE).exists() or not create:
        return Vocabulary.load(workdir)
    sentences = [s for builder, split in sources for s in training_sentences(builder, split, texts)]
    vocabulary = Vocabulary.build(sentences, min_count)
    lengths = np.array([len(words(s)) for s in sentences])
    names = " + ".join(f"{builder.info.full_name}:{split}" for builder, split in sources)
    logging.info("Vocabulary: %d words seen >= %d times in %d training captions (%s); %d captions "
                 "(%.2f%%) are longer than max_length=%d words and are truncated.",
                 len(vocabulary) - len(SPECIAL), min_count, len(sentences), names,
                 int((lengths > max_length).sum()), 100 * float((lengths > max_length).mean()),
                 max_length)
    if jax.process_index() == 0:
        logging.info("Saved the vocabulary to %s.", vocabulary.save(workdir))
    return vocabulary
