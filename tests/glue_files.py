"""Writes a small GLUE data directory in the real layout of each task (as download_glue_data.py does)."""

from pathlib import Path

import numpy as np

WORDS = "the cat dog sat ran on a mat big small red blue house car tree went home fast slow".split()


def _sentence(rng: np.random.Generator, n: int = 6) -> str:
    return " ".join(rng.choice(WORDS, n))


def write_glue_dir(root: Path, rows: int = 12, seed: int = 0) -> Path:
    """Every task's train/dev/test TSVs (and the diagnostic set) with `rows` rows each."""
    rng = np.random.default_rng(seed)
    s = lambda: _sentence(rng)  # noqa: E731
    files: dict[str, list[str]] = {}

    def labelled_rows(make):
        return [make(i, int(rng.integers(0, 2))) for i in range(rows)]

    # CoLA: no header in train/dev; test has one.
    for split in ("train", "dev"):
        files[f"CoLA/{split}.tsv"] = labelled_rows(lambda i, y: f"gj04\t{y}\t{'*' if not y else ''}\t{s()}")
    files["CoLA/test.tsv"] = ["index\tsentence"] + [f"{i}\t{s()}" for i in range(rows)]
    for split in ("train", "dev"):
        files[f"SST-2/{split}.tsv"] = ["sentence\tlabel"] + labelled_rows(lambda i, y: f"{s()} \t{y}")
    files["SST-2/test.tsv"] = ["index\tsentence"] + [f"{i}\t{s()}" for i in range(rows)]
    for split in ("train", "dev"):
        files[f"MRPC/{split}.tsv"] = ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"] + labelled_rows(
            lambda i, y: f"{y}\t{1000 + i}\t{2000 + i}\t{s()}\t{s()}"
        )
    files["MRPC/test.tsv"] = ["index\t#1 ID\t#2 ID\t#1 String\t#2 String"] + [
        f"{i}\t{1000 + i}\t{2000 + i}\t{s()}\t{s()}" for i in range(rows)
    ]
    sts_header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"
    for split in ("train", "dev"):
        files[f"STS-B/{split}.tsv"] = [sts_header + "\tscore"] + [
            f"{i}\tmain-news\tnews\t2012\t{i}\tnone\tnone\t{s()}\t{s()}\t{rng.uniform(0, 5):.3f}" for i in range(rows)
        ]
    files["STS-B/test.tsv"] = [sts_header] + [
        f"{i}\tmain-news\tnews\t2012\t{i}\tnone\tnone\t{s()}\t{s()}" for i in range(rows)
    ]
    for split in ("train", "dev"):
        files[f"QQP/{split}.tsv"] = ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"] + labelled_rows(
            lambda i, y: f"{i}\t{2 * i}\t{2 * i + 1}\t{s()}?\t{s()}?\t{y}"
        )
    files["QQP/train.tsv"].insert(5, "999\t1998\tonly a question with no pair")  # QQP's ragged rows
    files["QQP/test.tsv"] = ["id\tquestion1\tquestion2"] + [f"{i}\t{s()}?\t{s()}?" for i in range(rows)]
    mnli_head = "index\tpromptID\tpairID\tgenre\ts1_binary\ts2_binary\ts1_parse\ts2_parse\tsentence1\tsentence2"
    labels = ("contradiction", "entailment", "neutral")

    def mnli_row(i, extra_labels):
        gold = labels[int(rng.integers(0, 3))]
        return f"{i}\t{i}\t{i}e\tfiction\t( a )\t( b )\t(ROOT a)\t(ROOT b)\t{s()}\t{s()}\t{extra_labels}{gold}\t{gold}"

    files["MNLI/train.tsv"] = [mnli_head + "\tlabel1\tgold_label"] + [mnli_row(i, "") for i in range(rows)]
    for split in ("dev_matched", "dev_mismatched"):  # dev files carry five annotator labels
        head = mnli_head + "\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label"
        files[f"MNLI/{split}.tsv"] = [head] + [mnli_row(i, "neutral\tneutral\tneutral\tneutral\t") for i in range(rows)]
    for split in ("test_matched", "test_mismatched"):
        files[f"MNLI/{split}.tsv"] = [mnli_head] + [
            f"{i}\t{i}\t{i}e\tfiction\t( a )\t( b )\t(ROOT a)\t(ROOT b)\t{s()}\t{s()}" for i in range(rows)
        ]
    files["diagnostic/diagnostic.tsv"] = ["index\tsentence1\tsentence2"] + [f"{i}\t{s()}\t{s()}" for i in range(rows)]
    for task, (a, b) in {"QNLI": ("question", "sentence"), "RTE": ("sentence1", "sentence2")}.items():
        for split in ("train", "dev"):
            files[f"{task}/{split}.tsv"] = [f"index\t{a}\t{b}\tlabel"] + labelled_rows(
                lambda i, y: f"{i}\t{s()}\t{s()}\t{('entailment', 'not_entailment')[y]}"
            )
        files[f"{task}/test.tsv"] = [f"index\t{a}\t{b}"] + [f"{i}\t{s()}\t{s()}" for i in range(rows)]
    for split in ("train", "dev"):
        files[f"WNLI/{split}.tsv"] = ["index\tsentence1\tsentence2\tlabel"] + labelled_rows(
            lambda i, y: f"{i}\t{s()}\t{s()}\t{y}"
        )
    files["WNLI/test.tsv"] = ["index\tsentence1\tsentence2"] + [f"{i}\t{s()}\t{s()}" for i in range(rows)]
    for name, lines in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    return root
