"""Translation data: the embedded synthetic language pair, tokenization, and the run's two
vocabularies (Bahdanau, Cho, Bengio 2015).

The embedded pair (`synthetic_translation`) is generated locally from a grammar, so that what the
paper shows can be shown on a laptop: sentences of 5 to 60 source words whose translation needs
word reordering and agreement over long distances, which a fixed-length vector cannot carry.

  source (English-like)                         target (invented, Romance-like)
  the big red cat sees a dog near the river .   lo gato roso grando vide un cano pres la riva .
  ... because the cats that follow the dog sleep ... porke los gatos ke lo cano seguen dormen ...

Rules that make it more than word-for-word:
  * nouns have a gender only the target shows: articles and adjectives agree with it and with
    number (lo / la / los / las, -o / -a / -os / -as);
  * adjectives follow the noun, in reverse order ("big red cat" -> "gato roso grando");
  * verbs agree in number with their subject, across relative clauses;
  * subordinate clauses (because, while, relative "that") put the verb last, after its object
    and prepositional phrase: the longest-range reordering.

Real data (paper scale): TFDS `wmt14_translate/fr-en` (features 'en', 'fr'). The paper tokenizes
with Moses and keeps a shortlist of the 30,000 most frequent words per language; `tokenize` is
a small Moses-like tokenizer (punctuation split off, French elisions kept with their article:
"l' homme"), the same rule in Python and TensorFlow, and words outside the shortlist are <unk>.
"""
from __future__ import annotations

import dataclasses
import re

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from segattn_jax.data import captions as captions_lib
from segattn_jax.data.embedded import example_rng

# ---- tokenization (Python and TensorFlow twins: RE2 and `re` with re.ASCII agree) ---------------
_PUNCTUATION = r"""([.,!?;:"()\[\]])"""
_ELISION = r"([A-Za-z])'([A-Za-z])"  # l'homme -> l' homme, it's -> it' s (as one rule)


def tokenize(text: str) -> list[str]:
    """Moses-like tokens of a sentence (case kept, as the paper's shortlists are cased)."""
    text = re.sub(_PUNCTUATION, r" \1 ", text, flags=re.ASCII)
    text = re.sub(_ELISION, r"\1' \2", text, flags=re.ASCII)
    return text.split()


def tf_tokenize(text):
    """`tokenize` in TensorFlow: a string tensor (any shape) -> its tokens (ragged)."""
    text = tf.strings.regex_replace(text, _PUNCTUATION, r" \1 ")
    text = tf.strings.regex_replace(text, _ELISION, r"\1' \2")
    return tf.strings.split(text)


SOURCE_VOCABULARY, TARGET_VOCABULARY = "vocabulary_source.txt", "vocabulary_target.txt"


def vocabularies_for_run(workdir, sources, *, source_key: str, target_key: str, size: int,
                         max_length: int, create: bool
                         ) -> tuple[captions_lib.Vocabulary, captions_lib.Vocabulary]:
    """The run's source and target vocabularies: the workdir's when it has them; else (training)
    the `size` most frequent tokens of each side of every training source (0: all), saved
    there. Logs how many sentences exceed `max_length` tokens (they are truncated)."""
    directory = epath.Path(workdir)
    files = {source_key: SOURCE_VOCABULARY, target_key: TARGET_VOCABULARY}
    if not create or all((directory / f).exists() for f in files.values()):
        return tuple(captions_lib.Vocabulary.load(directory, f, tokenize) for f in files.values())
    vocabularies = []
    for key, filename in files.items():
        sentences = [s for builder, split in sources for s in captions_lib.training_sentences(
            builder, split, texts=lambda example, key=key: example[key])]
        vocabulary = captions_lib.Vocabulary.build(sentences, min_count=1, max_size=size,
                                                   tokenize=tokenize)
        lengths = np.array([len(tokenize(s)) for s in sentences])
        logging.info("Vocabulary %r: %d of %d distinct tokens kept from %d training sentences; "
                     "%d sentences (%.2f%%) are longer than max_length=%d tokens and are "
                     "truncated.", key, len(vocabulary) - len(captions_lib.SPECIAL),
                     len({w for s in sentences for w in tokenize(s)}), len(sentences),
                     int((lengths > max_length).sum()), 100 * float((lengths > max_length).mean()),
                     max_length)
        if jax.process_index() == 0:
            vocabulary.save(directory, filename)
        vocabularies.append(vocabulary)
    return tuple(vocabularies)


# ---- the synthetic language pair -----------------------------------------------------------------
# (English singular, English plural, target stem, gender); target plural = stem + "s".
NOUNS = (("cat", "cats", "gato", "m"), ("dog", "dogs", "cano", "m"), ("house", "houses", "kasa", "f"),
         ("tree", "trees", "arbo", "m"), ("car", "cars", "maquina", "f"),
         ("river", "rivers", "riva", "f"), ("city", "cities", "urbe", "f"),
         ("garden", "gardens", "orto", "m"), ("book", "books", "libro", "m"),
         ("teacher", "teachers", "magistro", "m"), ("child", "children", "nino", "m"),
         ("bird", "birds", "avo", "m"), ("table", "tables", "mesa", "f"),
         ("window", "windows", "fenestra", "f"), ("road", "roads", "via", "f"),
         ("mountain", "mountains", "monte", "m"), ("friend", "friends", "amiko", "m"),
         ("king", "kings", "rego", "m"), ("queen", "queens", "regina", "f"),
         ("door", "doors", "porta", "f"), ("letter", "letters", "litera", "f"),
         ("horse", "horses", "kavalo", "m"), ("boat", "boats", "barka", "f"),
         ("flower", "flowers", "flora", "f"))
# (English, target stem); the target adds -o / -a / -os / -as.
ADJECTIVES = (("big", "grand"), ("small", "pikol"), ("red", "ros"), ("old", "vek"),
              ("young", "jov"), ("green", "verd"), ("happy", "felik"), ("quiet", "kalm"),
              ("dark", "skur"), ("bright", "klar"), ("cold", "fri"), ("warm", "kald"),
              ("tall", "alt"), ("new", "nov"), ("strange", "strani"), ("blue", "blu"))
# (English singular, English plural, target stem); the target adds -e (singular) / -en (plural).
TRANSITIVE = (("sees", "see", "vid"), ("likes", "like", "am"), ("finds", "find", "trov"),
              ("follows", "follow", "segu"), ("watches", "watch", "mir"),
              ("helps", "help", "ajud"), ("carries", "carry", "port"), ("builds", "build", "konstru"),
              ("paints", "paint", "pint"), ("knows", "know", "konos"), ("calls", "call", "klam"),
              ("meets", "meet", "inkontr"))
INTRANSITIVE = (("sleeps", "sleep", "dorm"), ("runs", "run", "kur"), ("waits", "wait", "spet"),
                ("sings", "sing", "kant"))
PREPOSITIONS = (("near", "pres"), ("behind", "tras"), ("under", "sota"), ("with", "kon"),
                ("on", "sur"))
COORDINATING = (("and", "e"), ("but", "ma"))
SUBORDINATING = (("because", "porke"), ("while", "mentre"))
RELATIVE = ("that", "ke")
_ARTICLES = {("the", "m", False): "lo", ("the", "f", False): "la", ("the", "m", True): "los",
             ("the", "f", True): "las", ("a", "m", False): "un", ("a", "f", False): "una",
             ("some", "m", True): "unos", ("some", "f", True): "unas"}


def _phrase(rng: np.random.Generator, depth: int) -> tuple[list[str], list[str], bool]:
    """A noun phrase (source words, target words, plural): article, adjectives, noun, and at
    depth 0 maybe a prepositional phrase or a relative clause."""
    english, english_plural, stem, gender = NOUNS[rng.integers(len(NOUNS))]
    plural = bool(rng.random() < 0.35)
    article = ("the" if rng.random() < 0.6 else "some") if plural else (
        "the" if rng.random() < 0.6 else "a")
    adjectives = [ADJECTIVES[i] for i in rng.choice(len(ADJECTIVES), rng.choice(3, p=[.45, .35, .2]),
                                                    replace=False)]
    ending = ("o" if gender == "m" else "a") + ("s" if plural else "")
    source = [article, *[a for a, _ in adjectives], english_plural if plural else english]
    target = [_ARTICLES[article, gender, plural], stem + ("s" if plural else ""),
              *[t + ending for _, t in reversed(adjectives)]]
    if depth == 0 and rng.random() < 0.25:
        preposition, translated = PREPOSITIONS[rng.integers(len(PREPOSITIONS))]
        s, t, _ = _phrase(rng, depth + 1)
        source, target = source + [preposition, *s], target + [translated, *t]
    elif depth == 0 and rng.random() < 0.2:  # a subject relative: its verb agrees with the noun
        s, t = _clause(rng, depth + 1, subordinate=True, subject=None, plural=plural)
        source, target = source + [RELATIVE[0], *s], target + [RELATIVE[1], *t]
    return source, target, plural


def _clause(rng: np.random.Generator, depth: int, subordinate: bool, subject="new",
            plural: bool = False) -> tuple[list[str], list[str]]:
    """Subject verb [object] [prepositional phrase]; verb last in the target when subordinate.
    `subject=None` leaves the subject out (a relative clause's, agreeing with `plural`)."""
    source, target = [], []
    if subject is not None:
        source, target, plural = _phrase(rng, depth)
    transitive = rng.random() < 0.75
    english, english_plural, stem = (TRANSITIVE if transitive else INTRANSITIVE)[
        rng.integers(len(TRANSITIVE if transitive else INTRANSITIVE))]
    verb_source, verb_target = english_plural if plural else english, stem + ("en" if plural else "e")
    rest_source, rest_target = [], []
    if transitive:
        s, t, _ = _phrase(rng, depth + 1 if subject is None else depth)
        rest_source, rest_target = s, t
    if rng.random() < 0.3:
        preposition, translated = PREPOSITIONS[rng.integers(len(PREPOSITIONS))]
        s, t, _ = _phrase(rng, depth + 1)
        rest_source, rest_target = rest_source + [preposition, *s], rest_target + [translated, *t]
    source = source + [verb_source, *rest_source]
    target = target + ([*rest_target, verb_target] if subordinate else [verb_target, *rest_target])
    return source, target


def sentence_pair(rng: np.random.Generator, min_length: int = 5, max_length: int = 60
                  ) -> tuple[str, str]:
    """A (source, target) sentence pair whose source has `min_length` to `max_length` tokens
    (the period included), lengths spread evenly: clauses are joined by conjunctions until the
    sentence reaches a length drawn uniformly in that range."""
    while True:
        goal = rng.integers(min_length, max_length + 1)
        source, target = _clause(rng, 0, subordinate=False)
        while len(source) + 1 < goal:
            subordinate = rng.random() < 0.5
            (word, translated) = (SUBORDINATING if subordinate else COORDINATING)[rng.integers(2)]
            s, t = _clause(rng, 0, subordinate=subordinate)
            source, target = source + [word, *s], target + [translated, *t]
        if min_length <= len(source) + 1 <= max_length:
            return " ".join(source + ["."]), " ".join(target + ["."])


@dataclasses.dataclass
class SyntheticTranslationConfig(tfds.core.BuilderConfig):
    """Give a config a new `name` when changing its fields: TFDS caches prepared data by name."""
    num_train: int = 20_000
    num_validation: int = 500
    num_test: int = 1_000
    max_length: int = 60
    seed: int = 0


class SyntheticTranslation(tfds.core.GeneratorBasedBuilder):
    """An English-like to Romance-like language pair from a grammar (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        SyntheticTranslationConfig(name="default", description="20k/500/1k pairs, 5-60 words."),
        SyntheticTranslationConfig(name="tiny", num_train=200, num_validation=20, num_test=40,
                                   max_length=20, description="For fast tests, 5-20 words."),
    ]
    generated_locally = True

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({"source": tfds.features.Text(),
                                                 "target": tfds.features.Text()}),
            supervised_keys=("source", "target"),
            homepage="https://arxiv.org/abs/1409.0473")

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        cfg = self.builder_config
        sizes = {"train": cfg.num_train, "validation": cfg.num_validation, "test": cfg.num_test}
        return {split: self._generate_examples(split, n) for split, n in sizes.items()}

    def _generate_examples(self, split: str, count: int):
        cfg = self.builder_config
        for i in range(count):  # each pair depends only on (seed, split, index)
            rng = example_rng(cfg.seed, split, i)
            source, target = sentence_pair(rng, max_length=cfg.max_length)
            yield i, {"source": source, "target": target}
