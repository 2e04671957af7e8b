"""Compiled steps on disk (`bertjax.training.executables`): a step saved and loaded runs as the
jitted one does; another program, another jax, a damaged file or an existing name is refused."""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.compilation_cache import compilation_cache

from bertjax.errors import ConfigError
from bertjax.training import executables


@pytest.fixture(autouse=True)
def _compiled_afresh():
    """Steps compiled here, not loaded from a persistent compilation cache (as bertjax.preflight
    compiles them): XLA:CPU cannot serialise an executable it loaded from that cache whole."""
    enabled = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()  # jax decides once per process whether the cache is used
    yield
    jax.config.update("jax_enable_compilation_cache", enabled)
    compilation_cache.reset_cache()


def _step(scale: float):
    return jax.jit(lambda w, x: (w - scale * x.mean(0), (w * x).sum()), donate_argnums=0)


def _saved(tmp_path, step, *args):
    traced = step.trace(*args)
    lowered = traced.lower()
    path = tmp_path / "step.bin"
    executables.save(lowered.compile(), traced, lowered, path)
    return path


def test_a_saved_step_loads_and_computes_what_the_jitted_step_does(tmp_path):
    w, x = jnp.arange(4.0), jnp.ones((3, 4))
    path = _saved(tmp_path, _step(0.5), w, x)
    loaded = executables.load(path, "train.compiled_step_file", _step(0.5).trace(w, x))
    new_w, total = loaded(jnp.arange(4.0), x)
    expected_w, expected_total = _step(0.5)(jnp.arange(4.0), x)
    np.testing.assert_array_equal(new_w, expected_w)
    assert float(total) == float(expected_total)


def test_another_program_another_jax_a_damaged_file_and_an_existing_name_are_refused(tmp_path):
    w, x = jnp.arange(4.0), jnp.ones((3, 4))
    path = _saved(tmp_path, _step(0.5), w, x)
    key = "train.compiled_step_file"
    with pytest.raises(ConfigError, match="compiled from another train step"):
        executables.load(path, key, _step(0.25).trace(w, x))  # another constant
    with pytest.raises(ConfigError, match="compiled from another train step"):
        executables.load(path, key, _step(0.5).trace(w, jnp.ones((5, 4))))  # another batch
    with pytest.raises(ConfigError, match="the file exists"):
        executables.save(None, None, None, path)
    record = pickle.loads(path.read_bytes())
    other = tmp_path / "other-jax.bin"
    other.write_bytes(pickle.dumps({**record, "jax": "0.0.1"}))
    with pytest.raises(ConfigError, match="compiled by jax 0.0.1"):
        executables.load(other, key, _step(0.5).trace(w, x))
    damaged = tmp_path / "damaged.bin"
    damaged.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ConfigError, match="is not a compiled step"):
        executables.load(damaged, key, _step(0.5).trace(w, x))
    with pytest.raises(ConfigError, match="does not exist"):
        executables.load(tmp_path / "missing.bin", key, _step(0.5).trace(w, x))
