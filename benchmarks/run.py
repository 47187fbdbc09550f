"""All benchmarks in one run: `make bench` (or python benchmarks/run.py). Prints markdown tables."""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before jaxlib loads: see inception_step.py

import conv_passes  # noqa: E402
import conv_transpose  # noqa: E402
import deconvnet_train_step  # noqa: E402
import densecap_train_step  # noqa: E402
import detection_ops  # noqa: E402
import draw_train_step  # noqa: E402
import farabet_train_step  # noqa: E402
import faster_rcnn_train_step  # noqa: E402
import fcn_train_step  # noqa: E402
import handwriting_train_step  # noqa: E402
import inception_step  # noqa: E402
import localization_train_step  # noqa: E402
import loop_overhead  # noqa: E402
import mask_rcnn_train_step  # noqa: E402
import patch_vs_dense  # noqa: E402
import pinheiro_train_step  # noqa: E402
import resnet_train_step  # noqa: E402
import rnnsearch_train_step  # noqa: E402
import show_attend_tell_step  # noqa: E402
import single_shot_train_step  # noqa: E402
from report import in_fresh_process  # noqa: E402


BENCHMARKS = (fcn_train_step, resnet_train_step, patch_vs_dense, farabet_train_step,
              pinheiro_train_step, deconvnet_train_step, conv_passes, conv_transpose,
              loop_overhead, detection_ops, faster_rcnn_train_step, mask_rcnn_train_step,
              single_shot_train_step, localization_train_step, inception_step,
              show_attend_tell_step, densecap_train_step, draw_train_step, rnnsearch_train_step,
              handwriting_train_step)


def main() -> None:
    """Each benchmark in a process of its own (`report.in_fresh_process`): one's allocations do
    not change how the next one's are served."""
    for index, benchmark in enumerate(BENCHMARKS):
        if index:
            print(flush=True)
        in_fresh_process(benchmark.main)


if __name__ == "__main__":
    main()
