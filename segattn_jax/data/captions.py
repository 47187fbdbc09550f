"""Caption text: normalization, the vocabulary (built from the training captions, saved in the
workdir beside the checkpoints) and the tensors the captioning preprocessor makes from it.

Normalization follows Karpathy's preprocessing that Show, Attend and Tell's reference code reads:
lower case, punctuation dropped, split on white space. The same pattern runs in TensorFlow (the
input pipeline) and in Python (vocabulary building), so the two cannot disagree.
"""
from __future__ import annotations

import collections
import re
from typing import Callable, Iterable

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
    """Words <-> ids: the special tokens first, then words by decreasing training count.

    `tokenize` splits a sentence into words (captions: `words`; translation has its own)."""

    def __init__(self, tokens: Iterable[str], tokenize: Callable[[str], list[str]] = words):
        self.tokens = tuple(tokens)
        self.tokenize = tokenize
        if self.tokens[:len(SPECIAL)] != SPECIAL:
            raise ValueError(f"A vocabulary starts with {SPECIAL}; got {self.tokens[:4]}.")
        self.ids = {token: i for i, token in enumerate(self.tokens)}
        self.pad, self.start, self.end, self.unk = range(len(SPECIAL))

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(cls, sentences: Iterable[str], min_count: int = 5, max_size: int = 0,
              tokenize: Callable[[str], list[str]] = words) -> Vocabulary:
        """Every word seen at least `min_count` times (Show, Attend and Tell's reference
        threshold is 5), the `max_size` most frequent of them when > 0 (a translation
        shortlist)."""
        counts = collections.Counter(w for sentence in sentences for w in tokenize(sentence))
        kept = sorted((w for w, n in counts.items() if n >= min_count),
                      key=lambda w: (-counts[w], w))
        return cls(SPECIAL + tuple(kept[:max_size] if max_size > 0 else kept), tokenize)

    def encode(self, sentence: str) -> list[int]:
        return [self.ids.get(w, self.unk) for w in self.tokenize(sentence)]

    def decode(self, ids: Iterable[int], unknown: str = "") -> str:
        """Ids up to the first <end> as a sentence, without special tokens; <unk> is written as
        `unknown` when given (a translation keeps its unknown words' places)."""
        out = []
        for i in ids:
            if int(i) == self.end:
                break
            if int(i) >= len(SPECIAL):
                out.append(self.tokens[int(i)])
            elif int(i) == self.unk and unknown:
                out.append(unknown)
        return " ".join(out)

    def save(self, directory: str | epath.Path, filename: str = VOCABULARY_FILE) -> epath.Path:
        path = epath.Path(directory) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(self.tokens) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | epath.Path, filename: str = VOCABULARY_FILE,
             tokenize: Callable[[str], list[str]] = words) -> Vocabulary:
        path = epath.Path(directory) / filename
        if not path.exists():
            raise FileNotFoundError(
                f"{path} is missing: this workdir's model needs the vocabulary it was trained "
                f"with. Train in this --workdir first (training writes it), or copy the training "
                f"run's {filename} here.")
        return cls(path.read_text().splitlines(), tokenize)

    def table(self):
        """A TensorFlow word -> id lookup (unknown words -> <unk>) for the input pipeline."""
        import tensorflow as tf

        return tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(self.tokens),
                                                tf.range(len(self.tokens), dtype=tf.int64)),
            default_value=self.unk)


def tf_words(text):
    """A string tensor (any shape) -> its words, as `words` splits them (ragged)."""
    import tensorflow as tf

    return tf.strings.split(tf.strings.regex_replace(tf.strings.lower(text), _DROP, " "))


class CaptionEncoder:
    """Sentences -> fixed-length id tensors in TensorFlow: <start> w1 .. wn <end> <pad>..., at most
    `max_length` words (longer captions are truncated; `vocabulary_for_run` logs how many).
    `split` is the TensorFlow twin of the vocabulary's `tokenize` (captions: `tf_words`).
    Built eagerly, outside tf.data's traced functions, which then share its lookup table."""

    def __init__(self, vocabulary: Vocabulary, max_length: int, split: Callable = tf_words):
        if max_length < 1:
            raise ValueError(f"max_length={max_length} must be at least 1 word.")
        self.vocabulary, self.max_length = vocabulary, max_length
        self.words = split
        self._table = vocabulary.table()

    def has_unknown(self, text):
        """A scalar string tensor -> whether any of its words is outside the vocabulary."""
        import tensorflow as tf

        return tf.reduce_any(tf.equal(self._table.lookup(self.words(text)), self.vocabulary.unk))

    def encode(self, text, max_length: int | None = None):
        """A scalar string tensor -> int32 (max_length + 2,) (by default the encoder's)."""
        import tensorflow as tf

        length = max_length or self.max_length
        ids = self._table.lookup(self.words(text))[:length]
        v = self.vocabulary
        ids = tf.concat([[v.start], ids, [v.end]], axis=0)
        ids = tf.pad(ids, [[0, length + 2 - tf.shape(ids)[0]]], constant_values=v.pad)
        return tf.ensure_shape(tf.cast(ids, tf.int32), [length + 2])


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
