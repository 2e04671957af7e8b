"""Tokenizers (HF `tokenizers`): a BERT vocab.txt, any Hugging Face tokenizer.json, or a new vocab.

`load_tokenizer` takes a WordPiece `vocab.txt` and builds the same pipeline as transformers'
`BertTokenizerFast` (BERT normaliser with optional lower-casing and accent stripping, BERT
pre-tokeniser, WordPiece with `##` continuations, `[CLS] A [SEP] B [SEP]` template), or a
`tokenizer.json` as it is (byte-level BPE for RoBERTa and ModernBERT, WordPiece, SentencePiece
models), its own normaliser, template and special tokens included: RoBERTa's `<s> A </s></s> B
</s>` comes from its post-processor. Every caller takes the special tokens from `special_ids`,
which knows BERT's names (`[CLS]`, `[SEP]`, `[PAD]`, `[MASK]`, `[UNK]`) and RoBERTa's (`<s>`,
`</s>`, `<pad>`, `<mask>`, `<unk>`), and the word starts (for whole-word masking) from
`subword_flags`, which reads the tokenizer's own marks: `##` continuations, or the `Ġ` / `▁` of a
piece that starts a word.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import tokenizers
import tokenizers.processors
from tokenizers.implementations import BertWordPieceTokenizer

from bertjax import fileio
from bertjax.errors import DataError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Each role's token, as BERT (and ModernBERT) name it, then as RoBERTa (and XLM-R) do.
SPECIAL_NAMES = {
    "pad": ("[PAD]", "<pad>"),
    "unk": ("[UNK]", "<unk>"),
    "cls": ("[CLS]", "<s>"),
    "sep": ("[SEP]", "</s>"),
    "mask": ("[MASK]", "<mask>"),
}
# A piece that starts a word carries this mark, by pre-tokeniser (byte-level BPE, SentencePiece).
WORD_START_MARKS = {"ByteLevel": "\u0120", "Metaspace": "\u2581"}


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    """Ids of the special tokens of one tokenizer (see `SPECIAL_NAMES`)."""

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


def tokenizer_file(folder: str | Path) -> Path | None:
    """The tokenizer of a model folder: its vocab.txt (BERT, ELECTRA), else its tokenizer.json."""
    for name in ("vocab.txt", "tokenizer.json"):
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def load_tokenizer(vocab_file: str | Path, lowercase: bool = True) -> tokenizers.Tokenizer:
    """The tokenizer in `vocab_file`: a tokenizer.json (any `.json` file) as written, or a
    WordPiece vocab.txt equal to BertTokenizerFast on it (`lowercase` is for vocab.txt only; a
    tokenizer.json has its own normaliser). Its special tokens are checked (`special_ids`)."""
    path = Path(vocab_file)
    if path.suffix != ".json":
        read_vocab(path)
        wrapper = BertWordPieceTokenizer(str(path), lowercase=lowercase, strip_accents=None)
        return wrapper._tokenizer
    if problem := fileio.missing_or_not_a_file(path):
        raise DataError(f"tokenizer file {path} {problem}")
    try:
        tokenizer = tokenizers.Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust parser's message names the field and column
        raise DataError(f"tokenizer file {path} is not a tokenizer.json: {str(e).splitlines()[0]}") from None
    tokenizer.no_padding()
    tokenizer.no_truncation()
    special = special_ids(tokenizer, str(path))
    if tokenizer.post_processor is None:  # no template: BERT's, with the tokenizer's own tokens
        cls, sep = tokenizer.id_to_token(special.cls), tokenizer.id_to_token(special.sep)
        tokenizer.post_processor = tokenizers.processors.TemplateProcessing(
            single=f"{cls} $A {sep}",
            pair=f"{cls} $A {sep} $B:1 {sep}:1",
            special_tokens=[(cls, special.cls), (sep, special.sep)],
        )
    return tokenizer


def special_ids(tokenizer: tokenizers.Tokenizer, source: str = "the tokenizer") -> SpecialIds:
    """The id of each special token (`SPECIAL_NAMES`: BERT's name first, then RoBERTa's)."""
    ids = {}
    for role, names in SPECIAL_NAMES.items():
        found = [i for i in map(tokenizer.token_to_id, names) if i is not None]
        if not found:
            raise DataError(f"{source} has no {role} token ({' or '.join(names)})")
        ids[role] = found[0]
    return SpecialIds(**ids)


def pad_to(tokenizer: tokenizers.Tokenizer, length: int) -> None:
    """Pads every encoding to `length` with the tokenizer's own pad token (undo with no_padding)."""
    pad = special_ids(tokenizer).pad
    tokenizer.enable_padding(length=length, pad_id=pad, pad_token=tokenizer.id_to_token(pad))


def word_start_mark(tokenizer: tokenizers.Tokenizer) -> str | None:
    """The mark of a word-starting piece (`WORD_START_MARKS`), where the tokenizer's
    pre-tokeniser (or a Sequence of them) adds one; None for WordPiece."""

    def find(node: object) -> str | None:
        if isinstance(node, dict):
            if node.get("type") in WORD_START_MARKS:
                return WORD_START_MARKS[node["type"]]
            node = list(node.values())
        if isinstance(node, list):
            return next((m for m in map(find, node) if m), None)
        return None

    spec = json.loads(tokenizer.to_str())
    return find(spec.get("pre_tokenizer")) or find(spec.get("normalizer"))


def subword_flags(tokenizer: tokenizers.Tokenizer) -> np.ndarray:
    """A bool per vocab id: True for a piece that continues a word (for whole-word masking).

    WordPiece marks continuations (`##`); byte-level BPE and SentencePiece mark word starts
    (`Ġ`, `▁`), so every other piece continues a word, as fairseq's whole-word masking for
    RoBERTa counts them. Special tokens are never continuations; a model with neither mark
    has none (whole-word masking then masks single pieces)."""
    vocab = tokenizer.get_vocab()
    flags = np.zeros(max(vocab.values()) + 1, dtype=bool)
    prefix = getattr(tokenizer.model, "continuing_subword_prefix", None)
    mark = None if prefix else word_start_mark(tokenizer)
    for token, index in vocab.items():
        if prefix:
            flags[index] = token.startswith(prefix)
        elif mark:
            flags[index] = not token.startswith(mark)
    special = [i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special]
    flags[np.asarray(special, dtype=np.int64)] = False
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
