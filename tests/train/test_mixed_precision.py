"""Mixed precision on CPU: bfloat16 compute keeps float32 params, finite losses close to float32."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segattn_jax.models import compute_dtype
from segattn_jax.train import loop, mesh as mesh_lib
from tests.conftest import experiment_config


def _losses(name, arg, dtype, tfds_dir, tmp_path, steps=4):
    config = experiment_config(name, arg, tfds_dir, **{"model.dtype": dtype})
    exp = loop.Experiment(config, tmp_path / dtype)
    state = exp.new_state()
    batch = next(iter(exp.eval_batches()))
    batch = mesh_lib.to_global({k: batch[k] for k in ("image", "label")}, exp.mesh)
    losses = []
    for _ in range(steps):
        state, metrics = exp.train_step(state, batch)
        losses.append(float(metrics["loss"]))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state.params))
    return np.array(losses)


@pytest.mark.parametrize("name,arg", [("fcn", "FCN-8s,mini"), ("stn", "ST-CNN-Aff,RTS,mini")])
def test_bfloat16_steps_are_finite_and_close_to_float32(name, arg, tfds_dir, tmp_path):
    full = _losses(name, arg, "float32", tfds_dir, tmp_path)
    half = _losses(name, arg, "bfloat16", tfds_dir, tmp_path)
    assert np.all(np.isfinite(half)), half
    np.testing.assert_allclose(half, full, rtol=0.05, atol=0.02)


def test_auto_dtype_is_bfloat16_only_on_accelerators():
    expected = jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32
    assert compute_dtype("auto") == expected
    assert compute_dtype("bfloat16") == jnp.bfloat16
