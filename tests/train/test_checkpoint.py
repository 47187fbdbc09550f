"""Checkpointer behaviour that needs no training run."""
import asyncio
import gc

from segattn_jax.train.checkpoint import Checkpointer


def test_unretrieved_read_errors_under_the_checkpoint_directory_are_dropped(tmp_path, caplog):
    """orbax leaves failed reads of a damaged checkpoint as never-retrieved asyncio tasks; their
    tracebacks (already reported in one line) are dropped, other asyncio errors still show."""
    Checkpointer(tmp_path / "checkpoints", keep=1)

    async def fail(message):
        raise ValueError(message)

    for message in (f"OUT_OF_RANGE reading {tmp_path}/checkpoints/4/default/d/0", "elsewhere"):
        loop = asyncio.new_event_loop()
        task = loop.create_task(fail(message))
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
        del task
        gc.collect()
    logged = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert len(logged) == 1 and "elsewhere" in logged[0], logged


def test_checkpoints_written_before_model_state_existed_still_restore(tmp_path):
    """Runs saved before the train state had `model_state` (no batch norm) resume unchanged."""
    import jax
    import numpy as np
    import optax

    from segattn_jax.train.state import create_train_state

    tx = optax.sgd(0.1, momentum=0.9)
    state = create_train_state({"params": {"w": np.arange(3.0, dtype=np.float32)}}, tx)
    old = {"step": state.step, "params": state.params, "opt_state": state.opt_state}
    checkpointer = Checkpointer(tmp_path / "checkpoints", keep=1)
    checkpointer.save(5, old)
    checkpointer.close()
    checkpointer = Checkpointer(tmp_path / "checkpoints", keep=1)
    restored, unreadable = checkpointer.restore_latest(jax.eval_shape(lambda: state))
    checkpointer.close()
    assert unreadable == {} and restored.model_state == {}
    np.testing.assert_array_equal(restored.params["w"], state.params["w"])
