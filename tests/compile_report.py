"""Opt-in pytest plugin: how long each test spends compiling (jax.monitoring's events).

  .venv/bin/python -m pytest -p tests.compile_report -n 2 --dist loadfile tests

writes $COMPILE_REPORT_DIR (default: <tmp>/segattn_jax_compile_report)/<worker>.tsv, one line
per test: id, seconds in all, tracing + lowering, XLA backend compile, saved by the on-disk
cache. Only the tests' own processes are counted, not their CLI subprocesses.
"""
import collections
import os
import tempfile
import time

import pytest

_EVENTS = {"trace": ("/jax/core/compile/jaxpr_trace_duration",
                     "/jax/core/compile/jaxpr_to_mlir_module_duration"),
           "backend": ("/jax/core/compile/backend_compile_duration",),
           "cache_saved": ("/jax/compilation_cache/compile_time_saved_sec",)}
_seconds = collections.defaultdict(float)
_rows = []


def _listen(event: str, duration: float, **_) -> None:
    _seconds[event] += duration


def pytest_configure(config):
    import jax.monitoring
    jax.monitoring.register_event_duration_secs_listener(_listen)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _seconds.clear()
    began = time.perf_counter()
    yield
    parts = [sum(_seconds[e] for e in events) for events in _EVENTS.values()]
    _rows.append((item.nodeid, time.perf_counter() - began, *parts))


def pytest_unconfigure(config):
    if not _rows:
        return
    directory = os.environ.get("COMPILE_REPORT_DIR",
                               os.path.join(tempfile.gettempdir(), "segattn_jax_compile_report"))
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, os.environ.get("PYTEST_XDIST_WORKER", "main") + ".tsv")
    with open(path, "w") as f:
        f.write("test\tseconds\ttrace_and_lower\tbackend_compile\tcache_saved\n")
        for nodeid, *numbers in _rows:
            f.write(nodeid + "".join(f"\t{n:.2f}" for n in numbers) + "\n")
