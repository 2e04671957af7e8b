"""Command lines of short `python -m bertjax.pretrain` runs on the sample corpus, for the tests."""

import json
import sys
from pathlib import Path


def pretrain_command(workdir: Path, sample_files: dict, cache: Path, *overrides: str) -> list[str]:
    """A runlocal pretraining run on 200 news documents, logging every step, its data cached in `cache`."""
    return [
        sys.executable,
        "-m",
        "bertjax.pretrain",
        "--config=configs/pretrain.py:runlocal",
        f"--workdir={workdir}",
        f"--config.data.train_files={sample_files['news']}",
        f"--config.data.vocab_file={sample_files['vocab']}",
        "--config.data.max_documents=200",
        f"--config.data.cache_dir={cache}",
        "--config.train.log_every_steps=1",
        *overrides,
    ]


def train_records(workdir: Path) -> list[dict]:
    """The train lines of a run's metrics.jsonl."""
    path = workdir / "metrics.jsonl"
    if not path.is_file():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in lines if r["split"] == "train"]
