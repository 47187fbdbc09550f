"""RNNsearch and RNNencdec: Bahdanau, Cho, Bengio, "Neural Machine Translation by Jointly Learning
to Align and Translate", ICLR 2015 (equations of its Appendix A).

RNNsearch encodes the source with a bidirectional GRU, annotation h_j = [->h_j ; <-h_j], and
at every target step i scores each annotation with the alignment model (additive attention)

  e_ij = v_a^T tanh(W_a s_{i-1} + U_a h_j),  alpha_ij = softmax_j(e_ij),  c_i = sum_j alpha_ij h_j

then s_i = GRU(s_{i-1}, [E y_{i-1}, c_i]) from s_0 = tanh(W_s <-h_1), and the deep output
t_i = maxout(U_o s_{i-1} + V_o E y_{i-1} + C_o c_i), p(y_i | ...) = softmax(W_o t_i).

RNNencdec (Cho et al. 2014, the paper's baseline) has a forward GRU encoder whose last state
gives one fixed vector c = tanh(V h_T), the context of every step (s_0 = tanh(W_s c)); the
decoder is the same. Here it is the decoder attending over a single annotation, c.

U_a h_j is computed once per sentence; the decoder's input projections of every target word are
one matrix multiply, and the recurrence runs under one scan (`nn.scan`), which decoding also
uses one step at a time (`decode_step`, inside beam search). Initialization follows the paper's
Appendix B.1: recurrent matrices orthogonal, W_a and U_a N(0, 0.001^2), v_a and biases zero,
other matrices N(0, 0.01^2) (`weight_std`).
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from segattn_jax.layers.recurrent import GRU, GRUKernels, gru_update

PAD = 0  # the vocabularies' <pad> id (data/captions.py)
_ALIGNMENT_INIT = nn.initializers.normal(0.001)


class DecoderStep(nn.Module):
    """s_{i-1} -> s_i, with the context c_i and the attention weights alpha_i (scanned)."""

    hidden: int
    alignment: int
    attention: bool
    weight_std: float = 0.01
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, state: jax.Array, projected_word: jax.Array,
                 memory: dict[str, jax.Array]):
        """projected_word (B, 3H): the target word's input projections; memory: annotations
        (B, Tx, A), keys (B, Tx, n) = U_a h_j, mask (B, Tx). Returns (s_i, (s_{i-1}, c_i,
        alpha_i (B, Tx)))."""
        annotations, mask = memory["annotations"], memory["mask"]
        if self.attention:
            query = nn.Dense(self.alignment, use_bias=False, kernel_init=_ALIGNMENT_INIT,
                             dtype=self.dtype, name="W_a")(state)
            energy = nn.Dense(1, use_bias=False, kernel_init=nn.initializers.zeros,
                              dtype=self.dtype, name="v_a")(
                jnp.tanh(memory["keys"] + query[:, None]))[..., 0]
            energy = jnp.where(mask, energy.astype(jnp.float32), -jnp.inf)
            alpha = jax.nn.softmax(energy, axis=-1)
            context = jnp.einsum("bj,bja->ba", alpha.astype(annotations.dtype), annotations)
        else:
            alpha = mask.astype(jnp.float32)  # (B, 1): the one fixed vector
            context = annotations[:, 0]
        projected = projected_word + nn.Dense(3 * self.hidden, use_bias=False,
                                              kernel_init=nn.initializers.normal(self.weight_std),
                                              dtype=self.dtype, name="C")(context)
        gates_kernel, candidate_kernel = GRUKernels(self.hidden, name="U")()
        new_state = gru_update(state, projected, gates_kernel.astype(self.dtype),
                               candidate_kernel.astype(self.dtype))
        return new_state, (state, context, alpha)


class RNNSearch(nn.Module):
    """Attributes:
      source_vocab_size, target_vocab_size: the shortlists' sizes, special tokens included
        (the task derives them from the run's vocabularies).
      embed: word embedding size m (paper 620).
      hidden: GRU units n of each encoder direction and of the decoder (paper 1000).
      maxout: units l of the deep output's maxout layer (paper 500).
      alignment: hidden units n' of the alignment model (paper 1000).
      attention: True: RNNsearch; False: RNNencdec.
      weight_std: standard deviation of the initial embeddings and of every matrix that is
        neither recurrent nor in the alignment model (paper 0.01, for widths 620-1000). At the
        mini's widths (64-128) 0.01 starves RNNencdec's one path from the source: its encoder's
        gradients are ~1e-8 at the start, and it stays at the target language model's 18% word
        accuracy (README); the mini rows use 0.1, about LeCun's 1/sqrt(fan-in) there.
      dtype: compute dtype; attention weights and logits are float32.
    """

    source_vocab_size: int
    target_vocab_size: int
    embed: int = 620
    hidden: int = 1000
    maxout: int = 500
    alignment: int = 1000
    attention: bool = True
    weight_std: float = 0.01
    dtype: Any = jnp.float32

    def setup(self):
        small = nn.initializers.normal(self.weight_std)
        dense = functools.partial(nn.Dense, kernel_init=small, dtype=self.dtype)
        self.source_embedding = nn.Embed(self.source_vocab_size, self.embed, embedding_init=small,
                                         dtype=self.dtype)
        self.target_embedding = nn.Embed(self.target_vocab_size, self.embed, embedding_init=small,
                                         dtype=self.dtype)
        self.forward_encoder = GRU(self.hidden, kernel_init=small, dtype=self.dtype)
        if self.attention:
            self.backward_encoder = GRU(self.hidden, kernel_init=small, dtype=self.dtype)
            self.U_a = nn.Dense(self.alignment, use_bias=False, kernel_init=_ALIGNMENT_INIT,
                                dtype=self.dtype)
        else:
            self.V = dense(self.hidden)  # c = tanh(V h_T)
        self.W_s = dense(self.hidden)  # s_0
        self.W = dense(3 * self.hidden)  # [W_z, W_r, W] E y_{i-1} + biases
        self.decoder = nn.scan(DecoderStep, variable_broadcast="params",
                               split_rngs={"params": False}, in_axes=(0, nn.broadcast),
                               out_axes=0)(self.hidden, self.alignment, self.attention,
                                           self.weight_std, dtype=self.dtype)
        self.U_o = dense(2 * self.maxout)
        self.V_o = dense(2 * self.maxout, use_bias=False)
        self.C_o = dense(2 * self.maxout, use_bias=False)
        self.W_o = dense(self.target_vocab_size)

    def encode(self, source: jax.Array) -> tuple[dict[str, jax.Array], jax.Array]:
        """source (B, Tx) token ids, <pad> (0) after the sentence -> (memory for the decoder,
        s_0 (B, H))."""
        mask = source != PAD
        words = self.source_embedding(source)
        forward, last = self.forward_encoder(words, mask)
        if self.attention:
            backward, _ = self.backward_encoder(words, mask, reverse=True)
            annotations = jnp.concatenate([forward, backward], axis=-1)
            memory = {"annotations": annotations, "keys": self.U_a(annotations), "mask": mask}
            return memory, jnp.tanh(self.W_s(backward[:, 0]))
        context = jnp.tanh(self.V(last))
        batch = source.shape[0]
        memory = {"annotations": context[:, None], "keys": jnp.zeros((batch, 1, 1), self.dtype),
                  "mask": jnp.ones((batch, 1), bool)}
        return memory, jnp.tanh(self.W_s(context))

    def _readout(self, previous_state, words, context) -> jax.Array:
        """The deep output: maxout over pairs of U_o s_{i-1} + V_o E y_{i-1} + C_o c_i, then W_o."""
        t = self.U_o(previous_state) + self.V_o(words) + self.C_o(context)
        t = t.reshape(*t.shape[:-1], self.maxout, 2).max(-1)
        return self.W_o(t).astype(jnp.float32)

    def __call__(self, source: jax.Array, target_in: jax.Array) -> dict[str, jax.Array]:
        """Teacher forcing: target_in (B, Ty) is <start> y_1 .. y_{Ty-1}. Returns logits
        (B, Ty, V) of y_1 .. y_Ty and alpha (B, Ty, Tx) (RNNencdec: (B, Ty, 1) ones)."""
        memory, state = self.encode(source)
        words = self.target_embedding(target_in)
        projected = jnp.swapaxes(self.W(words), 0, 1)  # (Ty, B, 3H)
        _, (previous, context, alpha) = self.decoder(state, projected, memory)
        previous, context, alpha = (jnp.swapaxes(x, 0, 1) for x in (previous, context, alpha))
        return {"logits": self._readout(previous, words, context), "alpha": alpha}

    def decode_step(self, state: dict[str, jax.Array], tokens: jax.Array
                    ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
        """One decoding step (beam search): state holds s (B, H) and the memory; tokens (B,)
        y_{i-1}. Returns the new state and logits (B, V), alpha (B, Tx) of y_i."""
        memory = {k: state[k] for k in ("annotations", "keys", "mask")}
        words = self.target_embedding(tokens)
        new, (previous, context, alpha) = self.decoder(state["s"], self.W(words)[None], memory)
        return {**state, "s": new}, {"logits": self._readout(previous[0], words, context[0]),
                                     "alpha": alpha[0]}

    def initial_state(self, source: jax.Array) -> dict[str, jax.Array]:
        """The decoder's state before the first word: s_0 and the encoder's memory."""
        memory, state = self.encode(source)
        return {**memory, "s": state}
