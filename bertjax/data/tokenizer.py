"""WordPiece tokenization (HF `tokenizers`): load a BERT vocab.txt or train a new vocab.

`load_tokenizer` builds the same pipeline as transformers' `BertTokenizerFast` (BERT normaliser
with optional lower-casing and accent stripping, BERT pre-tokeniser, WordPiece with `##`
continuations, `[CLS] A [SEP] B [SEP]` template) and checks that the special tokens exist.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import tokenizers
from tokenizers.implementations import BertWordPieceTokenizer

from bertjax import fileio
from bertjax.errors import DataError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    """Ids of BERT's special tokens in one vocab."""

    pad: int
    unk: int
    cls: int
    sep: int
    mask: int


def read_vocab(vocab_file: str | Path) -> list[str]:
    """The tokens of a vocab.txt, one per line, with a clear error for a bad file."""
    path = Path(vocab_file)
    if problem := fileio.missing_or_not_a_file(path):
        raise DataError(f"vocab file {path} {problem}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise DataError(f"vocab file {path} line {line} is not UTF-8") from None
    tokens = text.splitlines()
    if not tokens:
        raise DataError(f"vocab file {path} is empty")
    missing = [t for t in SPECIAL_TOKENS if t not in set(tokens)]
    if missing:
        raise DataError(f"vocab file {path} has no {', '.join(missing)} token")
    return tokens


def load_tokenizer(vocab_file: str | Path, lowercase: bool = True) -> tokenizers.Tokenizer:
    """A WordPiece tokenizer over `vocab_file`, equal to BertTokenizerFast on the same vocab."""
    read_vocab(vocab_file)
    wrapper = BertWordPieceTokenizer(str(vocab_file), lowercase=lowercase, strip_accents=None)
    return wrapper._tokenizer


def special_ids(tokenizer: tokenizers.Tokenizer) -> SpecialIds:
    return SpecialIds(
        **{name: tokenizer.token_to_id(f"[{name.upper()}]") for name in ("pad", "unk", "cls", "sep", "mask")}
    )


def subword_flags(tokenizer: tokenizers.Tokenizer) -> np.ndarray:
    """A bool per vocab id: True for `##` continuation pieces (for whole-word masking)."""
    vocab = tokenizer.get_vocab()
    flags = np.zeros(max(vocab.values()) + 1, dtype=bool)
    for token, index in vocab.items():
        flags[index] = token.startswith("##")
    return flags


def train_vocab(
    texts: Iterable[str] | Iterator[str],
    output_dir: str | Path,
    vocab_size: int = 30522,
    lowercase: bool = True,
    min_frequency: int = 2,
) -> Path:
    """Trains a WordPiece vocab on `texts` and writes `output_dir/vocab.txt`; returns its path."""
    trainer = BertWordPieceTokenizer(lowercase=lowercase, strip_accents=None)
    trainer.train_from_iterator(
        texts,
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    trainer.save_model(str(output_dir))
    return output_dir / "vocab.txt"


def main(argv: list[str] | None = None) -> None:
    """python -m bertjax.tokenizer --files='corpus/*.txt' --vocab_size=30522 --out=vocab_dir"""
    import argparse
    import sys

    from bertjax.data.corpus import expand_files, read_text_files

    parser = argparse.ArgumentParser(description="Train a WordPiece vocab.txt on text files.")
    parser.add_argument("--files", required=True, help="comma-separated glob patterns of text files")
    parser.add_argument("--out", required=True, help="directory for vocab.txt")
    parser.add_argument("--vocab_size", type=int, default=30522)
    parser.add_argument("--min_frequency", type=int, default=2)
    parser.add_argument("--cased", action="store_true", help="keep case and accents")
    args = parser.parse_args(argv)
    patterns = [p for p in args.files.split(",") if p]
    try:
        expand_files(patterns)
        sentences = (s for document in read_text_files(patterns, "sentences") for s in document)
        path = train_vocab(sentences, args.out, args.vocab_size, not args.cased, args.min_frequency)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"vocab: {path} ({len(read_vocab(path))} tokens)")


if __name__ == "__main__":
    main()
