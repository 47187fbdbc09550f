"""The benchmarks' shared path still runs: the mini FCN-8s train step compiles through
benchmarks/report.compiled_train_step and takes a step, and the machine line names what a table
was measured on (smoke tests; `make bench` measures); the interleaved timing's rounds."""
import os
import sys

import jax
import numpy as np

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import fcn_train_step  # noqa: E402
import report  # noqa: E402


def test_mini_fcn_train_step_compiles_and_steps():
    step, info = fcn_train_step.jax_step("mini")
    step()
    assert info["gflop"] > 0 and np.isfinite(info["params_millions"])
    fcn_train_step.jax_predict("mini")()


def test_machine_line_names_cpu_threads_and_versions():
    """Every table prints the machine it was measured on: ratios against PyTorch move with it."""
    line = report.machine()
    assert f"{len(os.sched_getaffinity(0))} threads" in line
    assert f"jax {jax.__version__}" in line and "CPU: " in line


def test_timed_rounds_interleave_and_give_short_steps_more_samples(monkeypatch):
    """Every step runs in every round (after one untimed call), at least `repeats` rounds and
    more until each side's timed calls reach `min_total_s`; a step over `budget_s` drops out."""
    clock = [0.0]
    monkeypatch.setattr(report.time, "perf_counter", lambda: clock[0])
    calls = []

    def step(name, seconds):
        def run():
            calls.append(name)
            clock[0] += seconds
        return run

    times = report.timed_rounds({"short": step("short", 0.25), "long": step("long", 1.0)},
                                repeats=3, min_total_s=2.0)
    assert len(times["short"]) == len(times["long"]) == 8  # 8 x 0.25 s reach 2 s
    assert calls == ["short", "long"] * 9
    assert report.median_ratio({"torch": times["long"], "ours": times["short"]}) == 4.0
    times = report.timed_rounds({"short": step("short", 0.25), "slow": step("slow", 5.0)},
                                repeats=3, budget_s=4.0, min_total_s=2.0)
    assert len(times["slow"]) == 1 and len(times["short"]) == 8
    assert report.best_seconds({"short": step("short", 0.25)}, repeats=3) == {"short": 0.25}


def test_in_fresh_process_returns_the_result_of_another_process():
    assert report.in_fresh_process(os.getpid) != os.getpid()
    assert report.in_fresh_process(divmod, 7, 2) == (3, 1)


def test_torch_resnet50_is_our_resnet50():
    """The PyTorch side of benchmarks/resnet_train_step.py is the same network: the same
    parameter count (25.6M) and output shape as our ResNet-50 classifier."""
    torch = __import__("pytest").importorskip("torch")
    import resnet_train_step
    import torch_resnet

    from segattn_jax.backbones.resnet import resnet50

    theirs = torch_resnet.build(torch, num_classes=10)
    image = np.zeros((1, 64, 64, 3), np.float32)
    variables = jax.eval_shape(lambda: resnet50(num_classes=10).init(
        jax.random.key(0), image, train=False))
    ours = sum(x.size for x in jax.tree.leaves(variables["params"]))
    assert ours == sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    assert theirs(torch.zeros(1, 3, 64, 64)).shape == (1, 10)
    assert resnet_train_step._config().model.backbone == "resnet50"


def test_torch_recurrent_convnet_is_ours():
    """The PyTorch side of benchmarks/pinheiro_train_step.py computes our network: with our
    weights copied in, every instance's logits of the paper row's f equal ours."""
    torch = __import__("pytest").importorskip("torch")
    import pinheiro_train_step

    from segattn_jax.models import build_model

    m = pinheiro_train_step._config().model
    model = build_model(m)
    image = np.random.default_rng(0).uniform(size=(2, 30, 37, 3)).astype(np.float32)
    variables = model.init(jax.random.key(0), image, train=False)
    f = variables["params"]["f"]
    theirs = pinheiro_train_step.torch_network(torch, m)
    with torch.no_grad():
        for name, ours in [("conv1", f["conv1_1"]), ("conv2", f["conv2_1"])]:
            getattr(theirs, name).weight.copy_(torch.from_numpy(
                np.asarray(ours["kernel"]).transpose(3, 2, 0, 1).copy()))
            getattr(theirs, name).bias.copy_(torch.from_numpy(np.asarray(ours["bias"])))
        theirs.score.weight.copy_(torch.from_numpy(
            np.asarray(f["score"]["kernel"]).T.reshape(m.num_classes, -1, 1, 1).copy()))
        theirs.score.bias.copy_(torch.from_numpy(np.asarray(f["score"]["bias"])))
        logits = theirs(torch.from_numpy(image).permute(0, 3, 1, 2))
    expected = np.asarray(model.apply(variables, image, train=False))  # (T, N, H, W, K)
    assert len(logits) == m.instances == 3
    for t, instance in enumerate(logits):
        np.testing.assert_allclose(instance.permute(0, 2, 3, 1).numpy(), expected[t],
                                   rtol=1e-4, atol=1e-4)
