"""The synthetic language pair, tokenization (Python and TensorFlow agree), the translation
preprocessor, the run's vocabularies, and the pipeline's training filter."""
import itertools
import json

import numpy as np
import pytest
import tensorflow as tf
from etils import epath

from segattn_jax.data import captions, pipeline, translation
from segattn_jax.data.preprocess import translation as translation_preprocess


def _pairs(count, seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    return [translation.sentence_pair(rng, **kwargs) for _ in range(count)]


def test_pairs_are_reproducible_and_their_lengths_cover_5_to_60_evenly():
    pairs = _pairs(600)
    assert pairs == _pairs(600)
    lengths = np.array([len(s.split()) for s, _ in pairs])
    assert lengths.min() >= 5 and lengths.max() <= 60
    counts, _ = np.histogram(lengths, bins=[5, 15, 25, 35, 45, 55, 61])
    assert counts.min() > 0.05 * len(pairs), counts  # every length range is well represented


def test_translations_reorder_and_agree():
    """Word for word the target has one token per source token; its adjectives follow the noun
    in reverse order with the noun's gender and number, its verbs agree with their subject,
    and subordinate clauses put the verb last."""
    nouns = {english: (stem, gender) for english, _, stem, gender in translation.NOUNS}
    adjectives = dict(translation.ADJECTIVES)
    for source, target in _pairs(300):
        assert len(source.split()) == len(target.split())
    rng = np.random.default_rng(0)
    found = set()
    for _ in range(3000):
        source, target = (s.split() for s in translation.sentence_pair(rng, max_length=8))
        # "the ADJ1 ADJ2 NOUN VERB ." (main clause, intransitive): "lo NOUN ADJ2 ADJ1 VERB ."
        if len(source) == 6 and source[3] in nouns and source[1] in adjectives and \
                source[2] in adjectives and source[0] == "the":
            stem, gender = nouns[source[3]]
            ending = "o" if gender == "m" else "a"
            assert target[:4] == [{"m": "lo", "f": "la"}[gender], stem,
                                  adjectives[source[2]] + ending, adjectives[source[1]] + ending]
            found.add("adjectives")
    assert found == {"adjectives"}
    # "because the NOUN VERB the NOUN2 ...": "porke la/lo NOUN la/lo NOUN2 VERB ...".
    verbs = {english: stem for english, _, stem in translation.TRANSITIVE}
    rng = np.random.default_rng(1)
    for _ in range(5000):
        words, translated = (s.split() for s in translation.sentence_pair(rng, max_length=30))
        if "because" not in words:
            continue
        clause = words[words.index("because") + 1:]
        out = translated[translated.index("porke") + 1:]
        if len(clause) >= 6 and clause[0] == clause[3] == "the" and clause[1] in nouns and \
                clause[2] in verbs and clause[4] in nouns and \
                clause[5] in ("and", "but", "because", "while", "."):
            assert out[1] == nouns[clause[1]][0] and out[3] == nouns[clause[4]][0]
            assert out[4] == verbs[clause[2]] + "e"
            found.add("verb last")
            break
    assert "verb last" in found


@pytest.mark.parametrize("text", [
    "Hello, world!", "L'homme (le plus grand) dit: \"oui\".", "it's 3.5 km; rue de l'église ?",
    "  spaced   out  ", "no-punctuation here", "[brackets] and, commas"])
def test_python_and_tensorflow_tokenize_alike(text):
    got = [t.decode() for t in translation.tf_tokenize(tf.constant(text)).numpy()]
    assert got == translation.tokenize(text)


def _encoders(pairs, max_length=12):
    vocabularies = [captions.Vocabulary.build([p[i] for p in pairs], min_count=1, max_size=size,
                                              tokenize=translation.tokenize)
                    for i, size in ((0, 0), (1, 6))]
    return [captions.CaptionEncoder(v, max_length, split=translation.tf_tokenize)
            for v in vocabularies]


def test_preprocessor_encodes_pads_flags_unknown_words_and_truncation():
    pairs = [("the cat sees a dog .", "lo gato vide un cano ."), ("a dog runs .", "un cano kure .")]
    source_encoder, target_encoder = _encoders(pairs, max_length=5)
    assert len(target_encoder.vocabulary) == 4 + 6  # the shortlist: the 6 most frequent
    example = {"source": tf.constant(pairs[0][0]), "target": tf.constant(pairs[0][1])}
    out = translation_preprocess(example, tf.constant([0, 0], tf.int64), False,
                                 source_encoder=source_encoder, target_encoder=target_encoder,
                                 reference_bytes=32)
    source_ids = out["source"].numpy()
    assert source_ids.shape == (7,) and source_ids[0] == captions.Vocabulary(
        captions.SPECIAL).start
    assert source_encoder.vocabulary.decode(source_ids[1:]) == "the cat sees a dog"  # cut at 5
    assert int(out["source_words"]) == 6 and bool(out["source_truncated"])
    assert bool(out["unknown"]) == (
        target_encoder.vocabulary.encode(pairs[0][1]).count(target_encoder.vocabulary.unk) > 0)
    assert bytes(out["reference"].numpy()).rstrip(b"\0").decode() == pairs[0][1]
    short = translation_preprocess(example, tf.constant([0, 0], tf.int64), True,
                                   source_encoder=source_encoder, target_encoder=target_encoder,
                                   train_max_length=3)
    assert short["source"].shape == (5,) and short["target"].shape == (5,)
    with pytest.raises(ValueError, match="source_key"):
        translation_preprocess({"en": example["source"], "fr": example["target"]},
                               tf.constant([0, 0], tf.int64), False, source_encoder=source_encoder,
                               target_encoder=target_encoder)


def test_run_vocabularies_are_built_once_and_read_back(tfds_dir, tmp_path):
    builder = pipeline.load_builder("synthetic_translation/tiny", tfds_dir)
    kwargs = dict(source_key="source", target_key="target", size=0, max_length=20)
    source, target = translation.vocabularies_for_run(tmp_path, [(builder, "train")],
                                                      create=True, **kwargs)
    assert "cat" in source.ids and "gato" in target.ids and "gato" not in source.ids
    again = translation.vocabularies_for_run(tmp_path, [], create=False, **kwargs)
    assert (again[0].tokens, again[1].tokens) == (source.tokens, target.tokens)
    assert again[0].tokenize is translation.tokenize
    with pytest.raises(FileNotFoundError, match="Train in this --workdir"):
        translation.vocabularies_for_run(tmp_path / "other", [], create=False, **kwargs)


def _source_lengths(batch):
    return [len(bytes(s).rstrip(b"\0").split()) for s in batch["source"]]


def _raw(example, seed, train):
    del seed, train
    return {"source": tf.io.decode_raw(example["source"], tf.uint8, fixed_length=200)}


def test_training_filter_keeps_short_pairs_and_the_stream_still_resumes(tfds_dir):
    """Only pairs passing `keep` are trained on, and start_step=k yields what step k saw."""
    builder = pipeline.load_builder("synthetic_translation/tiny", tfds_dir)

    def keep(example):
        return tf.size(translation.tf_tokenize(example["source"])) <= 8

    def batches(start_step):
        return pipeline.train_iterator(builder, "train", preprocess=_raw, global_batch_size=4,
                                       seed=0, start_step=start_step, process_index=0,
                                       process_count=1, keep=keep)

    first = list(itertools.islice(batches(0), 30))
    assert all(n <= 8 for batch in first for n in _source_lengths(batch))
    resumed = list(itertools.islice(batches(17), 3))
    for a, b in zip(first[17:], resumed):
        np.testing.assert_array_equal(a["source"], b["source"])
    with pytest.raises(ValueError, match="max_train_length"):
        next(pipeline.train_iterator(builder, "train", preprocess=_raw, global_batch_size=4,
                                     seed=0, process_index=0, process_count=1,
                                     keep=lambda example: tf.constant(False)))


def test_kept_examples_are_counted_once_per_filter_and_cached(tfds_dir, tmp_path, monkeypatch):
    builder = pipeline.load_builder("synthetic_translation/tiny", tfds_dir)
    counts = tmp_path / "counts.json"

    def batch(keep_id, limit=8):
        return next(pipeline.train_iterator(
            builder, "train", preprocess=_raw, global_batch_size=4, seed=0, process_index=0,
            process_count=1, keep_counts=epath.Path(counts), keep_id=keep_id,
            keep=lambda e: tf.size(translation.tf_tokenize(e["source"])) <= limit))

    first = batch("short")
    (key, kept), = json.loads(counts.read_text()).items()
    assert key.endswith(":train:0/1:short") and 0 < kept < 200
    reduce = tf.data.Dataset.reduce
    monkeypatch.setattr(tf.data.Dataset, "reduce", lambda *a, **k: pytest.fail("counted again"))
    np.testing.assert_array_equal(batch("short")["source"], first["source"])  # from the file
    monkeypatch.setattr(tf.data.Dataset, "reduce", reduce)
    batch("longer", limit=12)  # another filter: counted, and kept beside the first
    assert len(json.loads(counts.read_text())) == 2
