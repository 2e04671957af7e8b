"""Predict with a fine-tuned model: one JSON line per input (see `bertjax.inference`).

    python -m bertjax.predict --checkpoint=runs/r8 --input=texts.txt --output=predictions.jsonl
    python -m bertjax.predict --checkpoint=runs/ner --input=news.txt --output=entities.jsonl
    python -m bertjax.predict --checkpoint=runs/squad --input=questions.jsonl --output=answers.jsonl

The checkpoint is a fine-tuning run directory, its best/ folder, a bertjax model checkpoint or a
Hugging Face folder with a fine-tuned head; the task follows from the head. The output is written
whole or not at all, and never over an existing file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bertjax import cli, fileio, inference
from bertjax.errors import BertjaxError, DataError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bertjax.predict", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="run directory, bertjax checkpoint or HF folder")
    parser.add_argument("--input", required=True, help="the inputs (text lines, JSONL or the task's format)")
    parser.add_argument("--output", required=True, help="the JSONL file to write (must not exist)")
    parser.add_argument(
        "--format", default="", choices=("", *inference.FORMATS), help="the input's format; empty: by suffix"
    )
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_seq_length", type=int, default=0, help="0: the run's, else 128 (384 for QA)")
    parser.add_argument("--doc_stride", type=int, default=0, help="QA: window overlap; 0: the run's, else 128")
    parser.add_argument("--max_query_length", type=int, default=0, help="QA: 0: the run's, else 64")
    parser.add_argument("--text_a", default="text", help="TSV/CSV: the text column")
    parser.add_argument("--text_b", default="", help="TSV/CSV: the second text column of pairs")
    args = parser.parse_args(argv)
    cli.use_compilation_cache()
    try:
        if args.batch_size < 1 or (args.max_seq_length and args.max_seq_length < 8):
            raise DataError(
                f"--batch_size={args.batch_size} must be >= 1 and --max_seq_length={args.max_seq_length} 0 or >= 8"
            )
        fileio.check_writable_file(args.output, "--output")
        if Path(args.output).exists():
            raise DataError(f"--output {args.output} already exists: choose a new file")
        if args.doc_stride < 0 or args.max_query_length < 0:
            raise DataError("--doc_stride and --max_query_length must be >= 0")
        predictor = inference.load_predictor(
            args.checkpoint, args.max_seq_length, doc_stride=args.doc_stride, max_query_length=args.max_query_length
        )
        records = inference.predict_file(predictor, args.input, args.format, args.batch_size, args.text_a, args.text_b)
    except BertjaxError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    fileio.write_text_atomically(args.output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    print(f"wrote {args.output}: {len(records)} {predictor.kind} predictions")


if __name__ == "__main__":
    main()
