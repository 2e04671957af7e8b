"""The entry points' process setup: one re-execution with glibc asking for transparent huge pages, which
turns XLA:CPU's per-step scratch mapping from one page fault per 4 KiB into one per 2 MiB, and JAX's
persistent compilation cache, which lets a later run load the steps an earlier one compiled."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bertjax import cli

ROOT = Path(__file__).resolve().parents[2]

# Counts the page faults of filling a fresh 256 MiB buffer from glibc's malloc (which maps it with mmap,
# as it does XLA:CPU's scratch buffer), after the entry points' setup.
CHILD = """
import ctypes, os, resource
from bertjax import cli
print("started", flush=True)
cli.use_huge_pages()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
ctypes.memset(libc.malloc(256 * 2**20), 1, 256 * 2**20)
print(os.environ.get("GLIBC_TUNABLES", ""), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _python(code: str, env: dict[str, str]) -> str:
    """The standard output of `python -c code` run from the repository with exactly `env`."""
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, check=True
    ).stdout


def _run(**env: str) -> tuple[list[str], str, int]:
    base = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "BERTJAX_HUGE_PAGES")}
    *before, last = _python(CHILD, {**base, **env}).strip().splitlines()
    tunables, faults = last.rsplit(" ", 1) if " " in last else ("", last)
    return before, tunables, int(faults)


@pytest.mark.skipif(not cli.huge_pages_would_help(), reason="needs Linux, glibc >= 2.35 and THP on madvise")
def test_entry_points_reexecute_once_with_huge_pages():
    started, tunables, faults = _run()
    assert started == ["started", "started"]  # the setup ran the program again from the start, once
    assert cli.HUGE_PAGES_TUNABLE in tunables.split(":")
    started_off, tunables_off, faults_off = _run(BERTJAX_HUGE_PAGES="0")
    assert started_off == ["started"] and tunables_off == ""
    assert faults_off > 60_000  # 256 MiB in 4 KiB pages
    assert faults < faults_off / 4  # 128 huge pages where the kernel has them free (it had: 640 faults)
    # A user's own tunables are kept beside ours.
    _, tunables_user, _ = _run(GLIBC_TUNABLES="glibc.malloc.check=0")
    assert tunables_user.split(":") == ["glibc.malloc.check=0", cli.HUGE_PAGES_TUNABLE]


def test_no_reexecution_where_it_cannot_help(monkeypatch):
    monkeypatch.setattr(cli, "huge_pages_would_help", lambda: False)
    monkeypatch.setattr(os, "execve", lambda *args: pytest.fail("re-executed"))
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    cli.use_huge_pages()


# Compiles one small program after the entry points' setup and reports whether the compilation cache
# served it.
CACHE_CHILD = """
import jax, jax.numpy as jnp
from bertjax import cli
hits = []
jax.monitoring.register_event_listener(lambda event, **kw: hits.append(event))
print(cli.use_compilation_cache())
jax.jit(lambda x: jnp.tanh(x) @ x.T)(jnp.ones((64, 64))).block_until_ready()
print("/jax/compilation_cache/cache_hits" in hits)
"""


def test_compilation_cache_serves_a_second_process(tmp_path):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "BERTJAX_COMPILATION"))}
    env = {**base, "XDG_CACHE_HOME": str(tmp_path), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}

    def run(**extra: str) -> list[str]:
        return _python(CACHE_CHILD, {**env, **extra}).split()

    directory = tmp_path / "bertjax" / "xla"
    assert run() == [str(directory), "False"]
    assert any(directory.iterdir())
    assert run() == [str(directory), "True"]  # the second process loads what the first compiled
    assert run(BERTJAX_COMPILATION_CACHE="0") == ["None", "False"]
    assert run(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "mine")) == ["None", "False"]  # JAX's own setting
    assert any((tmp_path / "mine").iterdir())


SETTINGS_CHILD = """
import jax
from bertjax import cli
cli.use_compilation_cache()
print(jax.config.jax_persistent_cache_min_compile_time_secs)
"""


def test_compilation_cache_keeps_programs_that_compile_in_under_a_second(tmp_path):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "BERTJAX_COMPILATION"))}

    def threshold(**extra: str) -> float:
        return float(_python(SETTINGS_CHILD, {**base, "XDG_CACHE_HOME": str(tmp_path), **extra}))

    assert threshold() == cli.COMPILATION_CACHE_MIN_SECONDS < 1.0  # JAX's default, 1 s, skips prediction steps
    assert threshold(JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="3") == 3.0  # the user's own setting


def test_compilation_cache_directory_follows_the_environment(tmp_path):
    assert cli.compilation_cache_dir({"XDG_CACHE_HOME": "/c", "HOME": "/h"}) == Path("/c/bertjax/xla")
    assert cli.compilation_cache_dir({"HOME": "/h"}) == Path("/h/.cache/bertjax/xla")
    assert cli.compilation_cache_dir({"HOME": "/h", "BERTJAX_COMPILATION_CACHE": "0"}) is None
    assert cli.compilation_cache_dir({"HOME": "/h", "JAX_COMPILATION_CACHE_DIR": "/x"}) is None
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert cli.use_compilation_cache({"XDG_CACHE_HOME": str(blocked)}) is None  # cannot be created: off
