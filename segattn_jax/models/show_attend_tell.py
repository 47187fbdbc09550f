"""Show, Attend and Tell: Xu, Ba, Kiros, Cho, Courville, Salakhutdinov, Zemel, Bengio, ICML 2015.

A CNN's last conv map is a set of L annotation vectors a_i; an LSTM writes the caption one word at
a time, and at each step attends over the a_i from its previous hidden state h_{t-1}:
  e_ti = f_att(a_i, h_{t-1}),  alpha_t = softmax(e_t),  z_t = beta_t * phi(a, alpha_t),
  beta_t = sigmoid(f_beta(h_{t-1}))  (the gating scalar, Section 4.2.1),
with phi the expectation (soft attention) or one location sampled from Multinoulli(alpha_t) (hard
attention, trained with REINFORCE by the captioning task). The initial memory and hidden state are
MLPs (one tanh layer, as the reference code) of the mean annotation; the deep output layer is
p(y_t) ~ exp(L_o tanh(E y_{t-1} + L_h h_t + L_z z_t)) with dropout before L_o.
`attention='none'` is the Show-and-Tell-style baseline: the mean image feature only sets the
initial state, and no context enters the steps.

The encoder is a slim CNN (mini rows, trained jointly) or VGG16 up to conv5_3 (paper scale,
14x14x512 from 224x224, frozen: `train_encoder=False`; the paper's VGG-19 conv5_4 has the same
shape, and this codebase imports VGG16 weights).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from segattn_jax.backbones import build_backbone
from segattn_jax.layers.attention import AdditiveAttention, expected_context, sampled_context
from segattn_jax.layers.conv import Conv
from segattn_jax.layers.pooling import max_pool

Array = Any
ATTENTION = ("soft", "hard", "none")


class SlimEncoder(nn.Module):
    """One conv + ReLU per stage (kernel sizes `kernels`), a 2x2 max pool after each of the first
    `pools` stages. The mini rows use (3, 3, 1) kernels and 2 pools: 64x64 images -> 16x16
    annotations whose receptive field (10 px) barely passes their 4 px cell, so each annotation
    describes its own place and only attention can tell which colour goes with which shape."""

    channels: Sequence[int] = (32, 64, 64)
    kernels: Sequence[int] = (3, 3, 1)
    pools: int = 2
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if len(self.kernels) != len(self.channels):
            raise ValueError(f"One kernel size per stage: {len(self.channels)} channels, "
                             f"{len(self.kernels)} kernels.")
        for stage, (features, kernel) in enumerate(zip(self.channels, self.kernels), start=1):
            x = nn.relu(Conv(features, (kernel, kernel), padding=kernel // 2, dtype=self.dtype,
                             name=f"conv{stage}")(x))
            if stage <= self.pools:
                x = max_pool(x, 2, 2)
        return x


class ShowAttendTell(nn.Module):
    """Caption decoder with soft, hard or no attention over a CNN's annotation vectors.

    Attributes:
      vocab_size: output words (the captioning task sets it from the run's vocabulary).
      attention: 'soft' | 'hard' | 'none'.
      encoder: 'slim' (SlimEncoder), 'vgg16' (the backbone, cut at `encoder_layer`) or
        'features': the inputs already are the feature maps (precomputed, as the reference code
        trains; the benchmark times the decoder alone this way).
      encoder_channels, encoder_kernels, encoder_pools: the slim encoder's channels and kernel
        size per stage, and how many of its stages end with a 2x2 max pool.
      encoder_layer: the backbone layer whose map is the annotations ('conv5_3' for VGG16).
      encoder_width: the backbone's width multiplier.
      train_encoder: False freezes the encoder (paper scale: ImageNet features, not fine-tuned).
      embed_dim: word embedding size, also the deep output's hidden size (the reference's dim_word).
      lstm_dim: LSTM units (1800 in the paper's COCO model).
      attention_dim: hidden size of the attention MLP.
      selector: the gating scalar beta.
      dropout_rate: dropout before the output layer (and on the context it sees), training only.
      dtype: compute dtype; parameters stay float32.
    """

    vocab_size: int = 0
    attention: str = "soft"
    encoder: str = "slim"
    encoder_channels: Sequence[int] = (32, 64, 64)
    encoder_kernels: Sequence[int] = (3, 3, 1)
    encoder_pools: int = 2
    encoder_layer: str = "conv5_3"
    encoder_width: float = 1.0
    train_encoder: bool = True
    embed_dim: int = 512
    lstm_dim: int = 1800
    attention_dim: int = 512
    selector: bool = True
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32

    def setup(self):
        if self.attention not in ATTENTION:
            raise ValueError(f"attention={self.attention!r}; valid: {ATTENTION}.")
        if self.vocab_size < 5:
            raise ValueError(f"vocab_size={self.vocab_size}: the captioning task sets it from the "
                             "run's vocabulary (special tokens and at least one word).")
        if self.encoder == "slim":
            self.cnn = SlimEncoder(tuple(self.encoder_channels), tuple(self.encoder_kernels),
                                   self.encoder_pools, dtype=self.dtype)
        elif self.encoder == "features":
            self.cnn = None
        elif self.encoder == "vgg16":
            self.cnn = build_backbone("vgg16", width=self.encoder_width, first_padding=1,
                                      last_layer=self.encoder_layer, dtype=self.dtype)
        else:
            raise ValueError(f"encoder={self.encoder!r}; valid: 'slim', 'vgg16', 'features'.")
        dense = lambda features, name, **kw: nn.Dense(features, dtype=self.dtype, name=name, **kw)
        self.init_memory = dense(self.lstm_dim, "init_memory")
        self.init_hidden = dense(self.lstm_dim, "init_hidden")
        self.embed = nn.Embed(self.vocab_size, self.embed_dim, name="embed")
        self.gates = dense(4 * self.lstm_dim, "lstm_gates")
        if self.attention != "none":
            self.attend = AdditiveAttention(self.attention_dim, dtype=self.dtype, name="attention")
            if self.selector:
                self.beta = dense(1, "selector")
            self.out_context = dense(self.embed_dim, "out_context")
        self.out_hidden = dense(self.embed_dim, "out_hidden")
        self.out_words = dense(self.vocab_size, "out_words")
        self.dropout = nn.Dropout(self.dropout_rate)

    # ---- pieces, each usable on its own (decoding calls them through `apply(method=...)`) ----
    def encode(self, images: Array, train: bool = False) -> Array:
        """Images (B, H, W, C) -> annotations (B, h, w, D)."""
        if self.encoder == "features":
            features = images
        elif self.encoder == "slim":
            features = self.cnn(images)
        else:
            features, _ = self.cnn(images, train=False)
        return features if self.train_encoder else jax.lax.stop_gradient(features)

    def initial_state(self, annotations: Array) -> dict[str, Array]:
        """The decoder's state before the first word: LSTM memory and hidden state from the mean
        annotation, the flattened annotations (B, L, D) and their attention keys."""
        flat = annotations.reshape(annotations.shape[0], -1, annotations.shape[-1])
        mean = flat.mean(axis=1)
        state = {"memory": jnp.tanh(self.init_memory(mean)),
                 "hidden": jnp.tanh(self.init_hidden(mean)), "annotations": flat}
        if self.attention != "none":
            state["keys"] = self.attend.project(flat)
        return state

    def recur(self, state: dict[str, Array], tokens: Array, *, train: bool = False,
              use_sample: Array | bool = False) -> tuple[dict[str, Array], dict[str, Array]]:
        """The recurrent part of one word: previous tokens (B,) -> (new state, {'previous' (B, E)
        their embedding, 'hidden' (B, H) h_t, 'context' (B, D) z_t, 'alpha' (B, L),
        'sample_log_prob' (B,)}). With hard attention and `use_sample` (training), the context
        is a sampled location (the 'sample' RNG stream); otherwise its expectation."""
        previous = self.embed(tokens)
        hidden, memory = state["hidden"], state["memory"]
        batch, length, channels = state["annotations"].shape
        outputs = {"previous": previous,
                   "context": jnp.zeros((batch, channels), previous.dtype),
                   "alpha": jnp.zeros((batch, length), jnp.float32),
                   "sample_log_prob": jnp.zeros((batch,), jnp.float32)}
        inputs = [previous]
        if self.attention != "none":
            scores = self.attend(state["keys"], hidden)
            alpha = jax.nn.softmax(scores, axis=-1)
            context = expected_context(alpha, state["annotations"])
            if self.attention == "hard" and train:
                sampled, _, log_prob = sampled_context(self.make_rng("sample"), scores,
                                                       state["annotations"])
                context = jnp.where(use_sample, sampled, context)
                outputs["sample_log_prob"] = jnp.where(use_sample, log_prob, 0.0)
            if self.selector:
                context = context * jax.nn.sigmoid(self.beta(hidden))
            outputs.update(alpha=alpha, context=context)
            inputs.append(context)
        i, f, o, g = jnp.split(self.gates(jnp.concatenate([*inputs, hidden], axis=-1)), 4, axis=-1)
        memory = jax.nn.sigmoid(f) * memory + jax.nn.sigmoid(i) * jnp.tanh(g)
        hidden = jax.nn.sigmoid(o) * jnp.tanh(memory)
        outputs["hidden"] = hidden
        return {**state, "hidden": hidden, "memory": memory}, outputs

    def readout(self, previous: Array, hidden: Array, context: Array, *, train: bool = False
                ) -> Array:
        """The deep output layer: word logits (..., V) from E y_{t-1}, h_t and z_t (any leading
        axes: teacher forcing runs it once over all steps, outside the recurrence)."""
        deep = self.out_hidden(hidden) + previous
        if self.attention != "none":
            deep = deep + self.out_context(context)
        deep = self.dropout(jnp.tanh(deep), deterministic=not train)
        return self.out_words(deep).astype(jnp.float32)

    def step(self, state: dict[str, Array], tokens: Array) -> tuple[dict[str, Array],
                                                                    dict[str, Array]]:
        """One decoding step (test time): `recur` then `readout`; outputs add 'logits' (B, V)."""
        state, outputs = self.recur(state, tokens)
        logits = self.readout(outputs["previous"], outputs["hidden"], outputs["context"])
        return state, {**outputs, "logits": logits}

    # ---- training: teacher forcing over the whole caption ------------------------------------
    def __call__(self, images: Array, tokens: Array, *, train: bool,
                 use_sample: Array | bool = False) -> dict[str, Array]:
        """Images (B, H, W, C) and input tokens (B, T) (<start> w1 ... w_{T-1}) ->
        logits (B, T, V), alpha (B, T, L), sample_log_prob (B, T), and 'grid': the annotations'
        (h, w) (static). The recurrence runs under `nn.scan`; the output layer, which needs no
        recurrence under teacher forcing, runs once on all steps (one large matmul instead of T
        small ones)."""
        annotations = self.encode(images, train)
        state = self.initial_state(annotations)

        def body(module, state, token):
            return module.recur(state, token, train=train, use_sample=use_sample)

        scan = nn.scan(body, variable_broadcast="params",
                       split_rngs={"params": False, "dropout": True, "sample": True},
                       in_axes=1, out_axes=1)
        _, outputs = scan(self, state, tokens)
        logits = self.readout(outputs["previous"], outputs["hidden"], outputs["context"],
                              train=train)
        return {"logits": logits, "alpha": outputs["alpha"],
                "sample_log_prob": outputs["sample_log_prob"], "grid": annotations.shape[1:3]}
