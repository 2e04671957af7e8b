"""Convert checkpoints between Hugging Face BERT folders and bertjax model checkpoints.

    python -m bertjax.convert from-hf SRC DST   # HF folder (config.json + safetensors/bin) -> bertjax
    python -m bertjax.convert to-hf SRC DST     # bertjax checkpoint or run directory -> HF folder

`to-hf` writes BertForPreTraining when both pretraining heads are present,
BertForSequenceClassification for a fine-tuned classifier, else BertModel (or the RoBERTa,
ModernBERT or ELECTRA class; an ELECTRA run gives `DST/discriminator` and `DST/generator`); the
vocab and tokenizer files travel along. DST must not exist yet (nothing is overwritten).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bertjax.errors import BertjaxError
from bertjax.weights import pretrained

EXIT_BAD_INPUT = 2


def from_hf(source: str | Path, destination: str | Path) -> Path:
    """A bertjax model checkpoint at `destination` from the HF folder `source`."""
    return pretrained.save(pretrained.read_hf(source), destination)


def to_hf(source: str | Path, destination: str | Path) -> Path:
    """An HF folder at `destination` from a bertjax checkpoint, run directory or HF folder."""
    return pretrained.write_hf(pretrained.load(source), destination)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bertjax.convert", description=__doc__.splitlines()[0])
    parser.add_argument("direction", choices=("from-hf", "to-hf"))
    parser.add_argument("source")
    parser.add_argument("destination")
    args = parser.parse_args(argv)
    convert = from_hf if args.direction == "from-hf" else to_hf
    try:
        written = convert(args.source, args.destination)
        # An ELECTRA run gives two folders: its discriminator and its generator.
        folders = [written] if (written / "config.json").is_file() or args.direction == "from-hf" else []
        folders = folders or sorted(p for p in written.iterdir() if p.is_dir())
        loaded = {folder: pretrained.load(folder) for folder in folders}
    except BertjaxError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    for folder, weights in loaded.items():
        params = sum(v.size for v in weights.params.values())
        print(f"wrote {folder}: {', '.join(weights.groups())} ({params:,} parameters)")


if __name__ == "__main__":
    main()
