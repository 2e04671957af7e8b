"""Feature extraction, as google-research/bert's extract_features.py: encoder outputs for texts.

    python -m bertjax.extract --checkpoint=DIR --input=texts.txt --output=features.npz

DIR is a Hugging Face BERT folder, a bertjax model checkpoint or a run directory; the input has
one text per line, `text_a ||| text_b` for a pair. The .npz holds, in input order:
`last_hidden_state` [n, length, hidden], `pooled_output` [n, hidden], `attention_mask`,
`input_ids` and `token_type_ids` [n, length]; `length` is --max_seq_length (texts are truncated,
the longer of a pair first). Written to a temporary file and renamed: no partial output.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import jax
import numpy as np
import tqdm

from bertjax import cli, fileio
from bertjax.data.labelled import encode_inputs
from bertjax.data.tokenizer import load_tokenizer
from bertjax.errors import BertjaxError, DataError
from bertjax.model.bert import BertModel
from bertjax.weights import pretrained
from bertjax.weights.param_tree import unflatten

PAIR_SEPARATOR = " ||| "


def read_texts(path: str | Path) -> list[str | tuple[str, str]]:
    """The input lines: a text, or a (text_a, text_b) pair split at ' ||| '."""
    path = Path(path)
    if problem := fileio.missing_or_not_a_file(path):
        raise DataError(f"input file {path} {problem}")
    texts: list[str | tuple[str, str]] = []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"input file {path} line {number} is not UTF-8") from None
        if PAIR_SEPARATOR.strip() in line:
            a, _, b = line.partition(PAIR_SEPARATOR.strip())
            texts.append((a.strip(), b.strip()))
        else:
            texts.append(line.strip())
    if not texts:
        raise DataError(f"input file {path} is empty")
    return texts


def extract(
    checkpoint: str | Path,
    texts: list[str | tuple[str, str]],
    max_seq_length: int = 128,
    batch_size: int = 32,
    vocab_file: str = "",
    show_progress: bool = True,
) -> dict[str, np.ndarray]:
    """Encoder outputs for `texts` with the checkpoint's encoder (and pooler)."""
    loaded = pretrained.load(checkpoint)
    vocab = vocab_file or loaded.vocab_file
    if not vocab:
        raise DataError(f"checkpoint {checkpoint} has no vocab.txt or tokenizer.json: pass --vocab")
    tokenizer = load_tokenizer(vocab, loaded.lowercase if not vocab_file else True)
    pretrained.check_vocab(loaded, tokenizer.get_vocab_size(), vocab)
    if max_seq_length > loaded.config.max_position_embeddings:
        raise DataError(
            f"--max_seq_length={max_seq_length} exceeds the model's {loaded.config.max_position_embeddings}"
        )
    if "pooler" not in loaded.groups():
        raise DataError(f"checkpoint {checkpoint} has no pooler")
    params = unflatten({k.removeprefix("bert/"): v for k, v in loaded.params.items() if k.startswith("bert/")})
    model = BertModel(dataclasses.replace(loaded.config, scan_layers=False))  # params: one per layer
    apply = jax.jit(lambda p, i, t, m: model.apply({"params": p}, i, t, m))

    ids, types, mask, _ = encode_inputs(texts, tokenizer, max_seq_length)
    hidden, pooled = [], []
    for start in tqdm.trange(0, len(ids), batch_size, unit="batch", disable=not show_progress):
        rows = slice(start, start + batch_size)
        count = len(ids[rows])
        pad = batch_size - count  # a fixed batch shape: one compilation
        batch = [np.pad(x[rows], ((0, pad), (0, 0))) for x in (ids, types, mask)]
        h, p = jax.device_get(apply(params, *batch))
        hidden.append(np.asarray(h, np.float32)[:count])
        pooled.append(np.asarray(p, np.float32)[:count])
    return {
        "last_hidden_state": np.concatenate(hidden),
        "pooled_output": np.concatenate(pooled),
        "attention_mask": mask,
        "input_ids": ids,
        "token_type_ids": types,
    }


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npz")
    try:
        np.savez(temporary, **arrays)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bertjax.extract", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="HF folder, bertjax checkpoint or run directory")
    parser.add_argument("--input", required=True, help="one text per line; 'a ||| b' for a pair")
    parser.add_argument("--output", required=True, help="the .npz to write")
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--vocab", default="", help="a vocab.txt or tokenizer.json, if the checkpoint has none")
    args = parser.parse_args(argv)
    cli.use_compilation_cache()
    try:
        if args.max_seq_length < 8 or args.batch_size < 1:
            raise BertjaxError(
                f"--max_seq_length={args.max_seq_length} must be >= 8 and --batch_size={args.batch_size} >= 1"
            )
        fileio.check_writable_file(args.output, "--output")
        arrays = extract(args.checkpoint, read_texts(args.input), args.max_seq_length, args.batch_size, args.vocab)
    except BertjaxError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    write_npz(args.output, arrays)
    shape = arrays["last_hidden_state"].shape
    print(
        f"wrote {args.output}: {shape[0]} texts, last_hidden_state {shape}, pooled_output {arrays['pooled_output'].shape}"
    )


if __name__ == "__main__":
    main()
