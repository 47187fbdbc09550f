"""BLEU as the paper reports it: on tokenized text, overall and by source length."""
import math

import pytest

from segattn_jax.metrics.translation import bleu_by_length, corpus_bleu


def test_bleu_of_a_hand_counted_case():
    """One wrong word in the middle of a 10-token sentence leaves 9/10 unigrams, 7/9 bigrams,
    5/8 trigrams and 3/7 4-grams matching; same length, so no brevity penalty."""
    reference = "a b c d e f g h i j"
    candidate = "a b c d X f g h i j"
    want = 100 * math.exp((math.log(9 / 10) + math.log(7 / 9) + math.log(5 / 8)
                           + math.log(3 / 7)) / 4)
    assert corpus_bleu([candidate], [reference]) == pytest.approx(want, abs=1e-6)
    assert corpus_bleu([reference], [reference]) == pytest.approx(100.0)
    assert corpus_bleu([], []) == 0.0


def test_tokens_are_not_retokenized():
    """Our tokens are scored as they are ('l'' and 'homme' stay two tokens, punctuation one)."""
    assert corpus_bleu(["l' homme , oui ."], ["l' homme , oui ."]) == pytest.approx(100.0)
    assert corpus_bleu(["l'homme, oui."], ["l' homme , oui ."]) < 100.0


def test_bleu_by_length_bins_sentences_by_source_length():
    references = ["a b c d e", "f g h i j", "k l m n o"]
    candidates = ["a b c d e", "z z z z z", "k l m n o"]
    got = bleu_by_length(candidates, references, source_lengths=[4, 15, 70], bins=(10, 20))
    assert got == pytest.approx({"bleu_len_1_10": 100.0, "bleu_len_11_20": 0.0,
                                 "bleu_len_21_up": 100.0})
    assert "bleu_len_11_20" not in bleu_by_length(candidates[:1], references[:1], [4],
                                                  bins=(10, 20))
