r"""Bahdanau, Cho, Bengio, ICLR 2015, Table 1: BLEU on WMT'14 English-to-French news-test-2014,
all sentences and those without unknown words ("No UNK"), and Figure 2: BLEU by sentence length.

Rows: RNNencdec (a fixed-length vector between encoder and decoder) and RNNsearch (additive
attention over the annotations), each trained on sentence pairs of up to 30 or 50 words. Paper
scale: TFDS `wmt14_translate/fr-en` (the paper trains on a 348M-word selection of it, by Axelrod
et al.'s data selection, not reproduced here), 30,000-word shortlists, 620-dim embeddings, GRUs
of 1000 units, maxout 500, Adadelta, batches of 80, gradients clipped at norm 1. ',mini' trains
on the embedded synthetic language pair (data/translation.py, sentences of 5 to 60 words) with a
small model.

  python -m segattn_jax.main train --config experiments/rnnsearch.py:RNNsearch-50,mini \
      --workdir runs/rnnsearch_mini
  python -m segattn_jax.main table --config experiments/rnnsearch.py:mini --workdir runs/rnnsearch
"""
from segattn_jax.train.config import base_config, parse_arg, table_cells

# Table 1 (BLEU; "All" and "No UNK" columns).
PAPER = {
    "RNNencdec-30": dict(bleu=13.93, bleu_no_unk=24.19),
    "RNNsearch-30": dict(bleu=21.50, bleu_no_unk=31.44),
    "RNNencdec-50": dict(bleu=17.82, bleu_no_unk=26.71),
    "RNNsearch-50": dict(bleu=26.75, bleu_no_unk=34.16),
}
ROWS = tuple(PAPER)
DEFAULT = {"row": "RNNsearch-50"}
LENGTH_METRICS = ("bleu_len_1_10", "bleu_len_11_20", "bleu_len_21_30", "bleu_len_31_40",
                  "bleu_len_41_50", "bleu_len_51_60")


def table_runs(arg: str) -> list[str]:
    """The config arguments of the table's cells (all rows, or those `arg` names), e.g. 'mini'."""
    return table_cells(arg, {"row": ROWS})


def table_figures(cells, workdir):
    """The paper's Figure 2: BLEU against source sentence length, one line per row, drawn to
    WORKDIR/bleu_by_length.png from the cells' metrics."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    for config, measured in cells:
        if not measured:
            continue
        names = [m for m in LENGTH_METRICS if m in measured]
        axes.plot([int(m.rsplit("_", 1)[1]) for m in names], [measured[m] for m in names],
                  marker="o", label=config.row,
                  linestyle="-" if config.model.attention else "--")
    axes.set_xlabel("sentence length (source words, bins of 10)")
    axes.set_ylabel("BLEU")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path = workdir / "bleu_by_length.png"
    with path.open("wb") as f:
        figure.savefig(f, format="png")
    plt.close(figure)
    return [path]


def _mini(c, train_length: int) -> None:
    """The synthetic pair (20k training pairs), 64-dim embeddings, GRUs of 128 units, initial
    weights N(0, 0.1^2), Adam."""
    c.dataset.name = "synthetic_translation/default"
    c.dataset.eval_split = "test"
    c.task.vocabulary_size = 0  # every word: the synthetic languages have ~200 each
    c.task.max_length = 60      # the longest synthetic sentence
    c.task.max_train_length = train_length
    c.task.beam_size = 5
    c.model.embed = 64
    c.model.hidden = 128
    c.model.maxout = 64
    c.model.alignment = 128
    # The paper's N(0, 0.01^2) is for widths 620-1000; at 64-128 it leaves RNNencdec at the
    # language model's word accuracy (models/rnnsearch.py, README). About LeCun's 1/sqrt(fan-in).
    c.model.weight_std = 0.1
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 2e-3
    c.optimizer.schedule = "cosine"
    c.train.batch_size = 64
    c.train.num_steps = 3000
    c.train.log_every = 100
    c.train.eval_every = 0
    c.train.checkpoint_every = 1000
    c.eval.batch_size = 100


def _paper_scale(c, train_length: int) -> None:
    """WMT'14 En->Fr: train on its pairs up to 30/50 tokens, validate on news-test-2013, test on
    news-test-2014 (3003 sentences) as the paper; the paper's sizes and optimizer."""
    c.dataset.name = "wmt14_translate/fr-en"
    c.dataset.eval_split = "test"
    c.dataset.preprocess.source_key = "en"
    c.dataset.preprocess.target_key = "fr"
    c.task.vocabulary_size = 30_000
    c.task.max_length = 100  # test sentences longer than this are truncated (counted, logged)
    c.task.max_train_length = train_length
    c.task.beam_size = 10    # the paper does not say; a common choice for this model
    c.model.embed = 620
    c.model.hidden = 1000
    c.model.maxout = 500
    c.model.alignment = 1000
    c.optimizer.name = "adadelta"
    c.optimizer.learning_rate = 1.0
    c.optimizer.adadelta_rho = 0.95
    c.optimizer.adadelta_epsilon = 1e-6
    c.optimizer.grad_clip_norm = 1.0
    c.train.batch_size = 80
    c.train.num_steps = 400_000  # the paper trains ~5 days and gives no update count
    c.train.log_every = 500
    c.train.eval_every = 50_000
    c.train.checkpoint_every = 10_000
    c.eval.batch_size = 80


def get_config(arg: str = "RNNsearch-50,mini"):
    names, flags = parse_arg(arg, {"row": ROWS}, defaults=DEFAULT)
    row = names["row"]
    c = base_config()
    c.experiment, c.row = "rnnsearch", row
    c.paper = PAPER[row]
    c.table_metrics = ("bleu", "bleu_no_unk", *LENGTH_METRICS, "seconds_per_image")
    c.task.name = "translation"
    c.model.name = "rnnsearch"
    c.model.attention = row.startswith("RNNsearch")
    c.model.weight_std = 0.01  # Appendix B.1's N(0, 0.01^2)
    c.model.dtype = "auto"
    c.optimizer.grad_clip_norm = 1.0
    train_length = int(row.rsplit("-", 1)[1])
    (_mini if "mini" in flags else _paper_scale)(c, train_length)
    return c.lock()
