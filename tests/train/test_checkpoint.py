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
