"""BLEU as Bahdanau et al. 2015 report it: corpus BLEU-4 on tokenized text (their multi-bleu.perl;
here sacrebleu with tokenize='none' over our tokens, which computes the same n-gram statistics),
overall and by source sentence length (their Figure 2)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import sacrebleu

LENGTH_BINS = (10, 20, 30, 40, 50, 60)  # upper ends of the source-length bins of Figure 2


def corpus_bleu(candidates: Sequence[str], references: Sequence[str]) -> float:
    """BLEU (percent) of tokenized candidate sentences against one tokenized reference each; 0
    for an empty corpus."""
    if not candidates:
        return 0.0
    return float(sacrebleu.corpus_bleu(list(candidates), [list(references)], tokenize="none",
                                       force=True).score)


def bleu_by_length(candidates: Sequence[str], references: Sequence[str],
                   source_lengths: Sequence[int], bins: Sequence[int] = LENGTH_BINS
                   ) -> dict[str, float]:
    """{'bleu_len_1_10': ..., 'bleu_len_11_20': ...}: BLEU of the sentences whose source has
    (previous bin end, bin end] words; bins without sentences are left out, and longer
    sentences than the last bin go to a last open bin ('bleu_len_61_up')."""
    lengths = np.asarray(source_lengths)
    edges = [0, *bins, np.inf]
    out = {}
    for low, high in zip(edges[:-1], edges[1:]):
        chosen = np.flatnonzero((lengths > low) & (lengths <= high))
        if chosen.size:
            name = f"bleu_len_{low + 1}_{'up' if high == np.inf else int(high)}"
            out[name] = corpus_bleu([candidates[i] for i in chosen],
                                    [references[i] for i in chosen])
    return out
