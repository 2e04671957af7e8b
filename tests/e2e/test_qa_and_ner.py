"""Question answering and entity tagging end to end: runs through the shared loop, their output
files, exact resume after SIGKILL, `predict` agreeing with the run, and bad input refused."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pretrain_runs import committed_checkpoints, run_until, steps_logged, train_records
from test_finetune import finetune

from bertjax.weights import pretrained

ROOT = Path(__file__).resolve().parents[2]
PEOPLE = "john mary peter anna paul laura".split()
PLACES = "paris london berlin rome madrid vienna".split()
FILLER = "the a went to and saw in yesterday with then".split()


def write_ner(folder: Path, seed: int = 0) -> Path:
    """CoNLL files where people and places are told apart by their words."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 160), ("valid", 40), ("test", 40)):
        blocks = ["-DOCSTART- -X- -X- O"]
        for _ in range(n):
            rows = []
            for _ in range(int(rng.integers(3, 9))):
                kind = rng.integers(0, 4)
                if kind == 0:
                    rows += [f"{rng.choice(PEOPLE)} NNP B-PER", f"{rng.choice(PEOPLE)} NNP I-PER"]
                elif kind == 1:
                    rows.append(f"{rng.choice(PLACES)} NNP B-LOC")
                else:
                    rows.append(f"{rng.choice(FILLER)} DT O")
            blocks.append("\n".join(rows))
        (folder / f"{split}.txt").write_text("\n\n".join(blocks) + "\n")
    return folder


def write_squad(folder: Path, seed: int = 0) -> Path:
    """SQuAD v1.1 files: who went to a place; the answer is the person."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 96), ("dev", 24)):
        paragraphs = []
        for i in range(n):
            person, place = rng.choice(PEOPLE), rng.choice(PLACES)
            before = " ".join(rng.choice(FILLER, int(rng.integers(2, 30))))
            context = f"{before} {person} went to {place} {' '.join(rng.choice(FILLER, 5))}."
            qa = {
                "id": f"{split}{i}",
                "question": f"who went to {place}?",
                "answers": [{"text": person, "answer_start": len(before) + 1}],
            }
            paragraphs.append({"context": context, "qas": [qa]})
        data = {"version": "1.1", "data": [{"title": "toy", "paragraphs": paragraphs}]}
        (folder / f"{split}.json").write_text(json.dumps(data))
    return folder


def _ner_args(folder: Path, vocab_file: Path) -> list[str]:
    return [
        f"--config.task.train_file={folder / 'train.txt'}",
        f"--config.task.dev_file={folder / 'valid.txt'}",
        f"--config.task.test_file={folder / 'test.txt'}",
        f"--config.task.vocab_file={vocab_file}",
        "--config.optim.learning_rate=2e-3",
        "--config.train.num_epochs=2",
        # Sentences packed into shared rows: `predict` (one padded row each) must tag as the run did.
        "--config.task.packing=true",
    ]


def _qa_args(folder: Path, vocab_file: Path) -> list[str]:
    return [
        f"--config.task.train_file={folder / 'train.json'}",
        f"--config.task.dev_file={folder / 'dev.json'}",
        f"--config.task.test_file={folder / 'dev.json'}",
        f"--config.task.vocab_file={vocab_file}",
        "--config.optim.learning_rate=1e-3",
        "--config.train.num_epochs=2",
        "--config.task.max_seq_length=32",  # contexts longer than one window: several per question
        "--config.task.doc_stride=8",
        "--config.task.max_query_length=8",
    ]


RUN_ARGS = ["--config.train.log_every_steps=1", "--config.train.checkpoint_every_steps=3"]


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory, vocab_file):
    """(data folder, args, a finished run's workdir): the uninterrupted run the tests look at."""
    root = tmp_path_factory.mktemp("ner")
    data = write_ner(root / "data")
    args = _ner_args(data, vocab_file) + RUN_ARGS
    finetune(root / "run", *args, config="configs/ner.py:runlocal")
    return data, args, root / "run"


@pytest.fixture(scope="module")
def qa_run(tmp_path_factory, vocab_file):
    root = tmp_path_factory.mktemp("qa")
    data = write_squad(root / "data")
    args = _qa_args(data, vocab_file) + RUN_ARGS
    result = finetune(root / "run", *args, config="configs/squad.py:runlocal")
    assert "24 questions in" in result.stdout
    return data, args, root / "run"


def predict(*args, check=True):
    result = subprocess.run(
        [sys.executable, "-m", "bertjax.predict", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_ner_run_scores_entities_writes_conlleval_files_and_predicts(tmp_path, ner_run):
    data, _, workdir = ner_run
    results = json.loads((workdir / "results.json").read_text())
    test = results["test"]["test"]
    assert {"precision", "recall", "f1", "accuracy", "f1_PER", "f1_LOC", "score"} <= set(test)
    assert test["f1"] > 0.5 and test["score"] == test["f1"], test
    lines = (workdir / "predictions" / "test.txt").read_text().splitlines()
    source = (data / "test.txt").read_text().splitlines()
    assert len(lines) == len(source) and lines[0] == source[0]
    assert all(line.startswith(src + " ") for line, src in zip(lines, source) if src and not src.startswith("-DOC"))
    best = pretrained.load(workdir / "best")
    assert best.labels == ("B-LOC", "B-PER", "I-PER", "O") and best.groups() == ["encoder", "token_classifier"]
    # predict on raw text: entities with character offsets into the line.
    text = tmp_path / "in.txt"
    text.write_text("then mary paul went to rome\n")
    predict(f"--checkpoint={workdir}", f"--input={text}", f"--output={tmp_path / 'out.jsonl'}")
    record = json.loads((tmp_path / "out.jsonl").read_text())
    assert record["tokens"] == ["then", "mary", "paul", "went", "to", "rome"] and len(record["tags"]) == 6
    for entity in record["entities"]:
        assert record["text"][entity["start"] : entity["end"]] == entity["text"]
    # predict on the CoNLL test file tags as the run did.
    predict(
        f"--checkpoint={workdir}", f"--input={data / 'test.txt'}", "--format=conll", f"--output={tmp_path / 'c.jsonl'}"
    )
    predicted = [json.loads(line)["tags"] for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    from_run = [line.split()[-1] for line in lines if line and not line.startswith("-DOC")]
    assert [t for tags in predicted for t in tags] == from_run


def test_qa_run_scores_em_f1_writes_official_files_and_predicts(tmp_path, qa_run):
    data, _, workdir = qa_run
    results = json.loads((workdir / "results.json").read_text())
    for split in (results["best"]["dev"], results["test"]["test"]):
        assert set(split) == {"exact", "f1", "score"} and 0 <= split["exact"] <= split["f1"] <= 100
    answers = json.loads((workdir / "predictions" / "test.json").read_text())
    nbest = json.loads((workdir / "predictions" / "test_nbest.json").read_text())
    assert sorted(answers) == sorted(f"dev{i}" for i in range(24))
    contexts = {
        p["qas"][0]["id"]: p["context"] for p in json.loads((data / "dev.json").read_text())["data"][0]["paragraphs"]
    }
    for qid, candidates in nbest.items():
        assert candidates[0]["text"] == answers[qid]
        assert sum(c["probability"] for c in candidates) == pytest.approx(1.0, abs=1e-6)
        for c in candidates:
            assert contexts[qid][c["start"] : c["end"]] == c["text"]
    # predict reads the SQuAD file and answers as the run did.
    predict(f"--checkpoint={workdir}", f"--input={data / 'dev.json'}", f"--output={tmp_path / 'a.jsonl'}")
    records = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert {r["id"]: r["answer"] for r in records} == answers
    # best/ exported to Hugging Face answers the same from there (with the run's window settings).
    hf = tmp_path / "hf"
    subprocess.run(
        [sys.executable, "-m", "bertjax.convert", "to-hf", str(workdir / "best"), str(hf)], cwd=ROOT, check=True
    )
    assert json.loads((hf / "config.json").read_text())["architectures"] == ["BertForQuestionAnswering"]
    jsonl = tmp_path / "q.jsonl"
    questions = json.loads((data / "dev.json").read_text())["data"][0]["paragraphs"]
    jsonl.write_text(
        "".join(
            json.dumps({"id": p["qas"][0]["id"], "question": p["qas"][0]["question"], "context": p["context"]}) + "\n"
            for p in questions
        )
    )
    settings = ["--max_seq_length=32", "--doc_stride=8", "--max_query_length=8"]
    predict(f"--checkpoint={hf}", f"--input={jsonl}", *settings, f"--output={tmp_path / 'b.jsonl'}")
    records = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert {r["id"]: r["answer"] for r in records} == answers


@pytest.mark.parametrize("task", ["ner", "squad"])
def test_killed_run_resumes_to_the_same_results(tmp_path, request, task):
    """SIGKILL mid-run, then the same command: the epochs, best epoch, weights and predictions
    equal the uninterrupted run's."""
    _, args, straight = request.getfixturevalue("ner_run" if task == "ner" else "qa_run")
    prediction = "test.txt" if task == "ner" else "test.json"
    config = f"configs/{task}.py:runlocal"
    reference = json.loads((straight / "results.json").read_text())
    total = max(r["step"] for r in train_records(straight))
    command = [sys.executable, "-m", "bertjax.finetune", f"--config={config}", *args]
    workdir = tmp_path / "killed"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    run_until([*command, f"--workdir={workdir}"], workdir, total // 2 + 1, signal.SIGKILL, env, checkpointed=True)
    assert not (workdir / "results.json").exists() and steps_logged(workdir) < total
    assert committed_checkpoints(workdir)
    finetune(workdir, *args, config=config)
    results = json.loads((workdir / "results.json").read_text())
    for key in ("epochs", "best", "test"):
        assert results[key] == reference[key], key
    ours, theirs = pretrained.load(workdir / "best").params, pretrained.load(straight / "best").params
    assert all(np.array_equal(ours[k], theirs[k]) for k in ours)
    assert (workdir / "predictions" / prediction).read_text() == (straight / "predictions" / prediction).read_text()


@pytest.mark.parametrize(
    "case",
    [
        "bad_tag",
        "no_train_file",
        "misplaced_answer",
        "unanswerable_in_v1",
        "stride_too_long",
        "query_too_long",
        "packed_questions",
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, vocab_file, case):
    ner, qa = write_ner(tmp_path / "ner"), write_squad(tmp_path / "squad")
    if case in ("bad_tag", "no_train_file"):
        config, args = "configs/ner.py:runlocal", _ner_args(ner, vocab_file)
        if case == "bad_tag":
            lines = (ner / "train.txt").read_text().splitlines()
            lines[3] = "berlin NNP L-CITY"
            (ner / "train.txt").write_text("\n".join(lines) + "\n")
            expected = f"{ner / 'train.txt'} line 4: tag 'L-CITY' is not one of iob2's"
        else:
            args[0] = f"--config.task.train_file={tmp_path / 'nope.txt'}"
            expected = f"data file {tmp_path / 'nope.txt'} does not exist"
    else:
        config, args = "configs/squad.py:runlocal", _qa_args(qa, vocab_file)
        record = json.loads((qa / "dev.json").read_text())
        qa_record = record["data"][0]["paragraphs"][2]["qas"][0]
        if case == "misplaced_answer":
            qa_record["answers"][0]["answer_start"] += 2
            expected = f"{qa / 'dev.json'} question dev2: answer "
        elif case == "unanswerable_in_v1":
            qa_record.update(answers=[], is_impossible=True)
            expected = "question dev2: an unanswerable question (is_impossible), a SQuAD v2.0 file"
        elif case == "stride_too_long":
            args.append("--config.task.doc_stride=24")
            expected = "task.doc_stride=24 must be below the context's share of a window"
        elif case == "query_too_long":
            args.append("--config.task.max_query_length=40")
            expected = "task.max_query_length=40 leaves no room for the context"
        else:
            args.append("--config.task.packing=true")
            expected = "config key task.packing: task 'squad' has features per example"
        (qa / "dev.json").write_text(json.dumps(record))
    workdir = tmp_path / "run"
    result = finetune(workdir, *args, config=config, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith("error: ") and expected in result.stderr, result.stderr
    assert not workdir.exists()


def test_predict_bad_input_is_one_line_and_exit_2(tmp_path, sample_files):
    (tmp_path / "in.txt").write_text("a text\n")
    (tmp_path / "exists.jsonl").write_text("kept\n")
    cases = [
        ([f"--checkpoint={sample_files['minilm']}", f"--input={tmp_path / 'in.txt'}"], "has no fine-tuned head"),
        ([f"--checkpoint={tmp_path / 'nope'}", f"--input={tmp_path / 'in.txt'}"], "does not exist"),
    ]
    for args, expected in cases:
        result = predict(*args, f"--output={tmp_path / 'out.jsonl'}", check=False)
        assert result.returncode == 2 and result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
        assert expected in result.stderr and not (tmp_path / "out.jsonl").exists()
    result = predict(
        f"--checkpoint={sample_files['minilm']}",
        f"--input={tmp_path / 'in.txt'}",
        f"--output={tmp_path / 'exists.jsonl'}",
        check=False,
    )
    assert result.returncode == 2 and "already exists" in result.stderr
    assert (tmp_path / "exists.jsonl").read_text() == "kept\n"
