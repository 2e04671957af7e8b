"""Compiled steps kept on disk: `bertjax.preflight --save_executable` writes the train step it
compiled for a topology, and a launch on that topology (`train.compiled_step_file`) runs it
instead of compiling its own (MaxText's `compiled_trainstep_file`). The file holds XLA's
serialised executable with the argument and result tree structures, the jax version that wrote
it and a digest of the program it was compiled from. The launch lowers its own step (tracing
only, seconds) and refuses, in one line, a file whose program differs (another model, optimizer,
schedule, batch or mesh), or written by another jax."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import jax
from jax.experimental import serialize_executable

from bertjax.errors import ConfigError

FORMAT = 1


def digest(traced: jax.stages.Traced, lowered: jax.stages.Lowered) -> str:
    """A fingerprint of a step's program: its jaxpr (the computation, named the same in any
    process), and its lowering's mesh and entry signature (shapes, shardings, donation)."""
    text = lowered.as_text()
    entry = [line for line in text.splitlines() if "sdy.mesh @" in line or "func.func public @main" in line]
    return hashlib.sha256("\n".join([str(traced.jaxpr), *entry]).encode()).hexdigest()


def save(
    compiled: jax.stages.Compiled, traced: jax.stages.Traced, lowered: jax.stages.Lowered, path: str | Path
) -> None:
    """Writes `compiled` (traced and lowered as `traced` and `lowered`) to `path`, a new file: an
    existing one is never overwritten. `compiled` must come from the compiler, not from JAX's
    persistent compilation cache (XLA:CPU serialises a cached executable without its functions),
    which is why bertjax.preflight compiles with that cache off."""
    path = Path(path)
    if path.exists():
        raise ConfigError(f"--save_executable={path}: the file exists (choose a new name)")
    payload, in_tree, out_tree = serialize_executable.serialize(compiled)
    record = {
        "format": FORMAT,
        "jax": jax.__version__,
        "digest": digest(traced, lowered),
        "payload": payload,
        "in_tree": in_tree,
        "out_tree": out_tree,
    }
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as f:
        pickle.dump(record, f)
    os.replace(partial, path)


def load(path: str | Path, key: str, traced: jax.stages.Traced) -> jax.stages.Compiled:
    """The compiled step in `path` (config key `key` names it), ready to call in place of the step
    that `traced` is this run's trace of; ConfigError if it was compiled from another program."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            record = pickle.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config key {key}: {path} does not exist") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as e:
        raise ConfigError(f"config key {key}: {path} is not a compiled step ({e})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ConfigError(f"config key {key}: {path} is not a compiled step written by bertjax.preflight")
    if record["jax"] != jax.__version__:
        raise ConfigError(
            f"config key {key}: {path} was compiled by jax {record['jax']}, this is jax {jax.__version__}"
        )
    if record["digest"] != digest(traced, traced.lower()):
        raise ConfigError(
            f"config key {key}: {path} was compiled from another train step (another model, optimizer, schedule, "
            "batch, mesh or topology): run bertjax.preflight again with this run's config"
        )
    return serialize_executable.deserialize_and_load(record["payload"], record["in_tree"], record["out_tree"])
