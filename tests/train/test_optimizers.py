import ml_collections
import numpy as np
import pytest

from segattn_jax.train.config import base_config
from segattn_jax.train.optimizers import make_optimizer, make_schedule


def _optimizer_config(**fields) -> ml_collections.ConfigDict:
    config = base_config().optimizer
    config.update(fields)
    return config


def test_step_schedule_with_warmup():
    schedule = make_schedule(_optimizer_config(schedule="step", learning_rate=1.0, warmup_steps=10,
                                               decay_at=(0.5,), decay_factor=0.1), 100)
    np.testing.assert_allclose([schedule(0), schedule(5), schedule(10), schedule(49), schedule(51)],
                               [0.0, 0.5, 1.0, 1.0, 0.1], rtol=1e-6)


def test_cosine_schedule_ends_at_zero():
    schedule = make_schedule(_optimizer_config(schedule="cosine", learning_rate=2.0), 100)
    assert float(schedule(0)) == 2.0 and float(schedule(100)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("bad", [{"name": "rmsprop"}, {"schedule": "linear"}])
def test_unknown_names_list_valid_ones(bad):
    with pytest.raises(ValueError, match="valid"):
        make_optimizer(_optimizer_config(**bad), 10)
