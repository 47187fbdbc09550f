"""Human pose estimation by joint regression (DeepPose): L2 losses per cascade stage, PCP and PDJ.

The model (models/deeppose.py) returns every stage's joint estimates; the metrics
(metrics/pose.py) score each stage, so one run shows what each stage of its cascade adds.
Invisible joints (occluded, outside the crop, or not annotated) are masked out of the loss and
the metrics. Metrics are in percent: `pcp` (mean PCP at 0.5 over DeepPose's arm and leg groups),
`pcp/<group>`, and PDJ at a fraction f of the torso diameter per joint group, `pdj/<group>@<f>`,
of the last stage (DeepPose's PDJ curves: the `PDJ_CURVE` fractions); each stage's under
'stage<s>/'.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np

from segattn_jax.metrics import pose as pose_metrics
from segattn_jax.tasks import pictures as pics
from segattn_jax.tasks.base import Batch, Task

PDJ_CURVE = tuple(round(0.05 * i, 2) for i in range(1, 11))  # 0.05 ... 0.5
PDJ_CURVE_GROUPS = ("elbows", "wrists", "knees", "ankles")


class PoseTask(Task):
    preprocess = "pose"

    def init_variables(self, rng, inputs):
        return dict(self.model.init({"params": rng}, inputs["image"]))

    @property
    def stages(self) -> int:
        return self.model.stages

    def loss(self, variables, batch: Batch, rng):
        sample_rng, dropout_rng = jax.random.split(rng)
        (losses, metrics), model_state = self.apply_train(
            variables, batch["image"], batch["joints"], batch["visible"], method="losses",
            rngs={"sample": sample_rng, "dropout": dropout_rng})
        return sum(losses.values()), {**losses, **metrics}, model_state

    def predict(self, variables, inputs):
        estimates = self.model.apply(variables, inputs["image"])
        return {**{f"stage{s + 1}": joints for s, joints in enumerate(estimates)},
                "joints": estimates[-1]}

    def statistics(self, batch: Batch, predictions):
        """Every stage's estimates with the truth; counted on the host (`accumulate`)."""
        return {**{f"stage{s + 1}": predictions[f"stage{s + 1}"] for s in range(self.stages)},
                "true": batch["joints"], "visible": batch["visible"] & batch["valid"][:, None]}

    def accumulate(self, total: Any, statistics) -> dict[str, np.ndarray]:
        """Sums each stage's PCP and PDJ counts (metrics/pose.py) over the eval set."""
        s = {k: np.asarray(v) for k, v in statistics.items()}
        counts = {}
        for stage in range(1, self.stages + 1):
            predicted = s[f"stage{stage}"]
            counts[f"pcp{stage}"] = np.stack(pose_metrics.pcp_counts(
                predicted, s["true"], s["visible"]))
            detected, joints = pose_metrics.pdj_counts(predicted, s["true"], s["visible"])
            counts[f"pdj{stage}"] = np.concatenate([detected, joints[None]])
        return counts if total is None else {k: total[k] + v for k, v in counts.items()}

    def summarize(self, statistics) -> dict[str, float]:
        """Each stage's PCP (mean and per group) and PDJ curves per joint group under
        'stage<s>/', the last stage's also without the prefix."""
        summary = {}
        for stage in range(1, self.stages + 1):
            pcp = pose_metrics.pcp_summary(*statistics[f"pcp{stage}"])
            pdj = statistics[f"pdj{stage}"]
            curves = pose_metrics.pdj_summary(pdj[:-1], pdj[-1], at=PDJ_CURVE)
            stage_summary = {"pcp": pcp["mean"],
                             **{f"pcp/{group}": pcp[group] for group in pose_metrics.PCP_GROUPS},
                             **{f"pdj/{group}@{f:g}": curves[f"{group}@{f:g}"]
                                for group in PDJ_CURVE_GROUPS for f in PDJ_CURVE}}
            summary.update({f"stage{stage}/{k}": 100.0 * v for k, v in stage_summary.items()})
        summary.update({k.split("/", 1)[1]: v for k, v in summary.items()
                        if k.startswith(f"stage{self.stages}/")})
        # NaN (no visible part, e.g. FLIC's legs) would break the JSON metrics: leave it out.
        return {k: float(v) for k, v in summary.items() if np.isfinite(v)}

    def _skeleton(self, image: np.ndarray, joints: np.ndarray, visible: np.ndarray | None = None
                  ) -> np.ndarray:
        return pics.draw_skeleton(image, joints, pose_metrics.LIMBS, visible)

    def pictures(self, batch, predictions) -> np.ndarray:
        """ground truth (visible joints) | each stage's estimate, one row per person."""
        rows = []
        for i, image in enumerate(batch["image"]):
            row = [self._skeleton(image, batch["joints"][i], batch["visible"][i])]
            row += [self._skeleton(image, predictions[f"stage{s + 1}"][i])
                    for s in range(self.stages)]
            rows.append(row)
        return pics.image_grid(rows, titles=("ground truth", *(
            f"stage {s + 1}" for s in range(self.stages))))

    def overlay(self, image, predictions) -> np.ndarray:
        """The last stage's skeleton on the image."""
        return self._skeleton(image, predictions["joints"])
