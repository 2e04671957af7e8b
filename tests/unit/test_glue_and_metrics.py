"""GLUE readers on files in each task's real layout; metrics equal to scikit-learn / scipy."""

import numpy as np
import pytest
from glue_files import write_glue_dir

from bertjax.data import labelled
from bertjax.errors import DataError
from bertjax.tasks import glue, metrics

sklearn_metrics = pytest.importorskip("sklearn.metrics")
scipy_stats = pytest.importorskip("scipy.stats")


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    return write_glue_dir(tmp_path_factory.mktemp("glue"))


@pytest.mark.parametrize("name", list(glue.TASKS))
def test_every_split_of_every_task_reads(glue_dir, name):
    task = glue.get_task(name)
    spec = task.spec
    splits = ("train", *spec.eval_splits, *spec.test_splits)
    for split in splits:
        examples = glue.read_split(task, split, data_dir=str(glue_dir))
        assert len(examples) == 12, (name, split)
        assert all(examples.text_a) and (examples.text_b is None) == (not spec.is_pair)
        if split in spec.test_splits:
            assert examples.labels is None and examples.ids == [str(i) for i in range(12)]
        elif spec.kind == "regression":
            assert examples.labels.dtype == np.float32 and 0 <= examples.labels.min() <= examples.labels.max() <= 5
        else:
            assert examples.labels.dtype == np.int32 and set(examples.labels) <= set(range(spec.num_labels))


def test_layout_details(glue_dir):
    cola = glue.read_split(glue.get_task("cola"), "train", data_dir=str(glue_dir))
    first = (glue_dir / "CoLA" / "train.tsv").read_text().splitlines()[0].split("\t")
    assert cola.text_a[0] == first[3] and cola.labels[0] == int(first[1])  # no header: columns by position
    mnli = glue.get_task("mnli")
    dev = glue.read_split(mnli, "dev_matched", data_dir=str(glue_dir))
    line = (glue_dir / "MNLI" / "dev_matched.tsv").read_text().splitlines()[1].split("\t")
    assert dev.labels[0] == glue.MNLI_LABELS.index(line[-1]) and dev.text_b[0] == line[9]
    qqp = glue.read_split(glue.get_task("qqp"), "train", data_dir=str(glue_dir))
    assert qqp.skipped_rows == 1 and len(qqp) == 12  # the ragged row is skipped and counted
    assert glue.get_task("SST-2") is glue.get_task("sst2")


def test_bad_glue_files(glue_dir, tmp_path):
    rte = glue.get_task("rte")
    bad = tmp_path / "RTE"
    bad.mkdir()
    good_lines = (glue_dir / "RTE" / "train.tsv").read_text().splitlines()
    (bad / "train.tsv").write_text("\n".join(good_lines[:4] + ["7\tonly two"] + good_lines[4:]) + "\n")
    with pytest.raises(DataError, match=r"RTE/train.tsv line 5: expected 4 columns, found 2"):
        glue.read_split(rte, "train", data_dir=str(tmp_path))
    (bad / "train.tsv").write_text("\n".join(good_lines[:3] + ["7\ta\tb\tmaybe"]) + "\n")
    with pytest.raises(
        DataError, match=r"line 4: unknown label 'maybe' \(the task's labels are entailment, not_entailment\)"
    ):
        glue.read_split(rte, "train", data_dir=str(tmp_path))
    (bad / "train.tsv").write_text(good_lines[0] + "\n")
    with pytest.raises(DataError, match="train.tsv has no examples"):
        glue.read_split(rte, "train", data_dir=str(tmp_path))
    with pytest.raises(DataError, match="dev.tsv does not exist"):
        glue.read_split(rte, "dev", data_dir=str(tmp_path))
    with pytest.raises(DataError, match="unknown GLUE task 'mnli2'"):
        glue.get_task("mnli2")


def test_custom_formats_and_discovered_labels(tmp_path):
    layout = labelled.Layout(text_a="text", label="topic", index="id")
    spec = labelled.TaskSpec("news", "classification", ("business", "sport"), ("accuracy",), {"train": layout})
    (tmp_path / "a.csv").write_text('id,text,topic\n1,"Shares, bonds fell",business\n2,A goal,sport\n')
    (tmp_path / "a.jsonl").write_text(
        '{"id": 1, "text": "Shares fell", "topic": "business"}\n\n{"id": 2, "text": "A goal", "topic": "sport"}\n'
    )
    for name in ("a.csv", "a.jsonl"):
        examples = labelled.read_file(tmp_path / name, spec, layout)
        assert examples.labels.tolist() == [0, 1] and examples.ids == ["1", "2"], name
    assert labelled.read_file(tmp_path / "a.csv", spec, layout).text_a[0] == "Shares, bonds fell"
    assert labelled.label_strings(tmp_path / "a.csv", layout) == {"business", "sport"}
    (tmp_path / "b.jsonl").write_text('{"id": 1, "text": "x"}\n')
    with pytest.raises(DataError, match=r"b.jsonl line 1: no field 'topic'"):
        labelled.read_file(tmp_path / "b.jsonl", spec, layout)


def test_encoding_pairs_truncates_the_longer_text(vocab_file):
    from bertjax.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(vocab_file)
    examples = labelled.Examples(
        ["one two three four five six seven eight", "hi"], ["nine ten", "there"], None, ["a", "b"], "x"
    )
    encoded = labelled.encode(examples, tokenizer, 9)
    assert encoded.truncated == 1
    cls, sep = 101, 102
    assert encoded.input_ids[0].tolist()[0] == cls and encoded.input_ids[0].tolist().count(sep) == 2
    assert encoded.token_type_ids[0].sum() == 3  # "nine ten [SEP]" kept whole: the longer text was cut
    assert encoded.attention_mask[1].sum() == 5 and encoded.input_ids[1][5:].tolist() == [0] * 4


def test_metrics_equal_sklearn_and_scipy():
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = rng.integers(0, 2, 200)
        predictions = np.where(rng.random(200) < 0.7, labels, 1 - labels)
        assert metrics.accuracy(labels, predictions) == pytest.approx(
            sklearn_metrics.accuracy_score(labels, predictions)
        )
        assert metrics.f1(labels, predictions) == pytest.approx(sklearn_metrics.f1_score(labels, predictions))
        assert metrics.matthews_corrcoef(labels, predictions) == pytest.approx(
            sklearn_metrics.matthews_corrcoef(labels, predictions)
        )
        three = rng.integers(0, 3, 200)
        guess = np.where(rng.random(200) < 0.5, three, rng.integers(0, 3, 200))
        assert metrics.matthews_corrcoef(three, guess) == pytest.approx(sklearn_metrics.matthews_corrcoef(three, guess))
        assert metrics.macro_f1(three, guess) == pytest.approx(sklearn_metrics.f1_score(three, guess, average="macro"))
        scores = np.round(rng.uniform(0, 5, 150), 1)  # rounded: many ties
        noisy = np.round(scores + rng.normal(0, 1, 150), 1)
        assert metrics.pearson(scores, noisy) == pytest.approx(scipy_stats.pearsonr(scores, noisy)[0])
        assert metrics.spearman(scores, noisy) == pytest.approx(scipy_stats.spearmanr(scores, noisy)[0])
    assert metrics.matthews_corrcoef(np.ones(5), np.ones(5)) == 0.0  # undefined -> 0, as sklearn
    assert metrics.f1(np.zeros(4), np.zeros(4)) == 0.0


def test_submission_cells_and_glue_score():
    assert glue.submission_rows(glue.get_task("mnli"), np.array([0, 1, 2])) == [
        "contradiction",
        "entailment",
        "neutral",
    ]
    assert glue.submission_rows(glue.get_task("cola"), np.array([1, 0])) == ["1", "0"]
    assert glue.submission_rows(glue.get_task("stsb"), np.array([-0.2, 2.5, 5.7])) == ["0.000", "2.500", "5.000"]
    mrpc = glue.get_task("mrpc").spec
    assert mrpc.score({"f1": 0.9, "accuracy": 0.8}) == pytest.approx(0.85)
