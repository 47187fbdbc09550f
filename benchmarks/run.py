"""All benchmarks in one run: `make bench` (or python benchmarks/run.py). Prints markdown tables."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

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
import resnet_train_step  # noqa: E402
import rnnsearch_train_step  # noqa: E402
import show_attend_tell_step  # noqa: E402
import single_shot_train_step  # noqa: E402


def main() -> None:
    fcn_train_step.main()
    print()
    resnet_train_step.main()
    print()
    patch_vs_dense.main()
    print()
    farabet_train_step.main()
    print()
    deconvnet_train_step.main()
    print()
    conv_passes.main()
    print()
    conv_transpose.main()
    print()
    loop_overhead.main()
    print()
    detection_ops.main()
    print()
    faster_rcnn_train_step.main()
    print()
    mask_rcnn_train_step.main()
    print()
    single_shot_train_step.main()
    print()
    localization_train_step.main()
    print()
    inception_step.main()
    print()
    show_attend_tell_step.main()
    print()
    densecap_train_step.main()
    print()
    draw_train_step.main()
    print()
    rnnsearch_train_step.main()
    print()
    handwriting_train_step.main()


if __name__ == "__main__":
    main()
