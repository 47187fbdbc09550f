"""Beam search against brute-force enumeration on a small stateful decoder."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from segattn_jax.ops.beam_search import beam_search, repeat_for_beams

PAD, START, END = 0, 1, 2
VOCAB, HASHES, LENGTH = 6, 11, 4
TABLE = np.array(jax.nn.log_softmax(2.0 * jax.random.normal(jax.random.key(3),
                                                              (2, HASHES, VOCAB))))
TABLE[..., [PAD, START]] = -np.inf  # never generated


def _next_hash(h, token):
    return (h * 7 + token) % HASHES


def step(state, tokens):
    """log p(next | history) through a hash of the history, so a wrong beam reordering of the
    state changes the scores; the per-step output is the hash the step read."""
    example, h = state
    h = _next_hash(h, tokens)
    return jnp.asarray(TABLE)[example, h], (example, h), h


def _score(example: int, tokens) -> float:
    h, total = 0, 0.0
    previous = START
    for token in tokens:
        h = _next_hash(h, previous)
        total += TABLE[example, h, token]
        if token == END:
            break
        previous = token
    return total


def _brute_force(example: int):
    words = [t for t in range(VOCAB) if t not in (PAD, START)]
    candidates = []
    for tokens in itertools.product(words, repeat=LENGTH):
        end = tokens.index(END) + 1 if END in tokens else LENGTH
        padded = tuple(tokens[:end]) + (PAD,) * (LENGTH - end)
        candidates.append((_score(example, padded), padded))
    return max(candidates)


def _search(beam_size: int):
    state = repeat_for_beams((jnp.arange(2), jnp.zeros(2, jnp.int32)), beam_size)
    return jax.jit(lambda s: beam_search(step, s, batch_size=2, beam_size=beam_size,
                                         max_length=LENGTH, start_id=START, end_id=END,
                                         pad_id=PAD))(state)


def test_wide_beam_finds_the_most_likely_sequence():
    result = _search(beam_size=(VOCAB - 2) ** LENGTH)
    for example in range(2):
        score, tokens = _brute_force(example)
        assert tuple(np.asarray(result["tokens"][example])) == tokens
        np.testing.assert_allclose(result["score"][example], score, rtol=1e-5)
        assert int(result["length"][example]) == len([t for t in tokens if t != PAD])


def test_beam_of_one_is_greedy_and_outputs_follow_the_hypothesis():
    result = _search(beam_size=1)
    for example in range(2):
        h, previous, hashes, tokens = 0, START, [], []
        for _ in range(LENGTH):
            h = _next_hash(h, previous)
            hashes.append(h)
            token = PAD if previous in (END, PAD) else int(np.argmax(TABLE[example, h]))
            tokens.append(token)
            previous = token
        assert list(np.asarray(result["tokens"][example])) == tokens
        n = int(result["length"][example])
        assert list(np.asarray(result["outputs"][example][:n])) == hashes[:n]
