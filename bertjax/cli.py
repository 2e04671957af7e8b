"""Shared plumbing of the entry points: absl flags, bad input as a one-line error (exit 2), the
process's host-memory setup (transparent huge pages, see `use_huge_pages`) and JAX's persistent
compilation cache (`use_compilation_cache`)."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from absl import app, flags, logging

from bertjax.errors import BertjaxError, TrainingStopped

EXIT_BAD_INPUT = 2
EXIT_STOPPED = 1  # training could not go on (e.g. a non-finite loss); what was saved is kept


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except Exception as e:  # flag, config-file and override errors all end here
        cause = e.__cause__ or e.__context__
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "loading config file" in str(e) or "parsing config file" in str(e):
            message, cause = _config_file_error(e), None
        if cause is not None and str(cause).strip() and str(cause).splitlines()[0] not in message:
            message = f"{message}: {str(cause).strip().splitlines()[0]}"
        if isinstance(e, (AttributeError, KeyError)):  # ml_collections: an override of a key the config lacks
            missing = str(e).strip("\"' ")
            for arg in argv:
                name = arg.removeprefix("--").split("=")[0]
                if name.startswith("config.") and name.split(".")[-1] == missing:
                    message = f"unknown config key {name.removeprefix('config.')}"
        fail(message)


def config_value(holder: flags.FlagHolder) -> Any:
    """The ConfigDict of a `config_flags` flag. Config files are loaded on first access, after flag
    parsing: a file that does not exist or does not load is a one-line error here too."""
    try:
        value = holder.value
        value.keys()  # a file that failed to load gives a stand-in that raises its error on use
        return value
    except Exception as e:  # any failure of the user's config file
        fail(_config_file_error(e.__cause__ or e))


def _config_file_error(error: BaseException) -> str:
    """The one line of a config file that did not load: ml_collections puts the reason (the file
    missing, the module's own error) on its message's last line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"--config: {lines[-1] if lines else type(error).__name__}"


HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
_THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def huge_pages_would_help() -> bool:
    """Linux with glibc >= 2.35 (which has the tunable) and transparent huge pages on request ("madvise";
    with "always" every mapping gets them already, with "never" none can)."""
    libc, version = platform.libc_ver()
    if sys.platform != "linux" or libc != "glibc" or tuple(map(int, version.split(".")[:2])) < (2, 35):
        return False
    try:
        return "[madvise]" in _THP_SETTING.read_text()
    except OSError:
        return False


def huge_pages_environment(environ: Mapping[str, str]) -> dict[str, str] | None:
    """`environ` with glibc's huge-pages tunable added after the user's own tunables; None where it is
    set already (by us before the re-execution, or by the user), turned off (BERTJAX_HUGE_PAGES=0),
    or cannot help."""
    if environ.get("BERTJAX_HUGE_PAGES", "1") == "0" or not huge_pages_would_help():
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in tunables:
        return None
    return {**environ, "GLIBC_TUNABLES": ":".join(t for t in (tunables, HUGE_PAGES_TUNABLE) if t)}


def use_huge_pages() -> None:
    """Re-executes this process once with glibc's malloc asking for transparent huge pages.

    XLA:CPU allocates every step's scratch buffer (0.3 GiB at BERT-mini, 1.6 GiB at BERT-base-128) with
    a fresh mmap and frees it after the step, so the kernel faults its pages in 4 KiB at a time, every
    step: about a tenth of a BERT-base CPU step (docs/performance.md). With 2 MiB pages that cost
    goes away. glibc reads `GLIBC_TUNABLES` only at start-up,
    hence the re-execution, before anything has run. Set BERTJAX_HUGE_PAGES=0 to turn it off.
    """
    env = huge_pages_environment(os.environ)
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


COMPILATION_CACHE_MAX_BYTES = 4 << 30  # least recently used entries go beyond this (a MiniLM step: 0.6 MB)
# Programs that compile faster than this are not written (JAX's default, 1 s, would leave out a
# MiniLM prediction step: 0.7-0.9 s a shape on 2 CPU cores, six shapes in the SQuAD demo).
COMPILATION_CACHE_MIN_SECONDS = 0.2


def compilation_cache_dir(environ: Mapping[str, str]) -> Path | None:
    """Where compiled steps are kept between runs: `$XDG_CACHE_HOME/bertjax/xla` (~/.cache/bertjax/xla);
    None where the user chose a directory (`JAX_COMPILATION_CACHE_DIR`, which JAX reads itself) or
    turned the cache off (BERTJAX_COMPILATION_CACHE=0)."""
    if "JAX_COMPILATION_CACHE_DIR" in environ or environ.get("BERTJAX_COMPILATION_CACHE", "1") == "0":
        return None
    cache_home = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".cache")
    return Path(cache_home) / "bertjax" / "xla"


def use_compilation_cache(environ: Mapping[str, str] = os.environ) -> Path | None:
    """Turns on JAX's persistent compilation cache in `compilation_cache_dir`, as MaxText does by
    default (`jax_cache_dir`), and returns the directory (None: left to JAX's own settings).

    Every batch shape of a train or eval step is a compilation of its own (on 2 CPU cores a MiniLM
    fine-tuning gradient takes 2-3 s a shape to trace and compile, its prediction step about 1 s,
    BERT-base more); with the cache a second run of a config, a resumed run and the runs of a sweep
    load them instead. Programs that compile in under `COMPILATION_CACHE_MIN_SECONDS` are not
    written (`JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS` overrides it). Entries are keyed by the
    program, the devices, the compile options and the JAX version, so a hit is the same executable.
    A directory that cannot be created leaves the cache off.
    """
    directory = compilation_cache_dir(environ)
    if directory is None:
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    import jax  # here, not at the top: this module stays light for the commands that compile nothing

    jax.config.update("jax_compilation_cache_dir", str(directory))
    if "JAX_COMPILATION_CACHE_MAX_SIZE" not in environ:
        jax.config.update("jax_compilation_cache_max_size", COMPILATION_CACHE_MAX_BYTES)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", COMPILATION_CACHE_MIN_SECONDS)
    return directory


def run(main: Callable[[list[str]], Any]) -> None:
    """`absl.app.run(main)` in a process with huge pages (`use_huge_pages`) and the persistent
    compilation cache (`use_compilation_cache`), with BertjaxError and flag errors as one line on
    stderr and exit 2."""
    use_huge_pages()
    use_compilation_cache()

    def guarded(argv: list[str]) -> Any:
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
        try:
            return main(argv)
        except BertjaxError as e:
            fail(str(e))
        except TrainingStopped as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(EXIT_STOPPED)

    app.run(guarded, flags_parser=_parse_flags)
