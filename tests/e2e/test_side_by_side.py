"""`experiments/peers/side_by_side.py` (make compare-ner / compare-qa): bertjax and the torch peer
trained on one config, each process timed, their scores in one table."""

import json
import subprocess
import sys
from pathlib import Path

from test_qa_and_ner import write_ner

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "experiments" / "peers" / "side_by_side.py"

CONFIG = """
from bertjax import config as config_lib


def get_config(arg=None):
    config = config_lib.load_config_module({ner!r}).get_config(None)
    config.init = {init!r}
    config.task.train_file, config.task.dev_file, config.task.test_file = {files!r}
    config.task.max_seq_length = 32
    config.train.batch_size = 16
    config.train.num_epochs = 1.0
    config.optim.learning_rate = 1e-3
    return config
"""


def test_side_by_side_prints_both_systems_scores_and_wall_times(tmp_path, sample_files):
    data = write_ner(tmp_path / "conll")
    config = tmp_path / "tiny_ner.py"
    files = tuple(str(data / f"{split}.txt") for split in ("train", "valid", "test"))
    config.write_text(
        CONFIG.format(ner=str(ROOT / "configs" / "ner.py"), init=str(sample_files["minilm"]), files=files)
    )
    workdir = tmp_path / "compare"
    command = [sys.executable, str(SCRIPT), f"--config={config}", f"--workdir={workdir}", "--group-by-length"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    ours = json.loads((workdir / "bertjax" / "results.json").read_text())
    peer = json.loads((workdir / "peer.json").read_text())
    table = (workdir / "side_by_side.txt").read_text().splitlines()
    assert table[0].split() == ["bertjax", "torch", "peer"]
    rows = {" ".join(line.split()[:-2]): line.split()[-2:] for line in table[1:] if not line.startswith("published")}
    # Each system's own figures: bertjax's best epoch, the peer's same epoch, both test splits.
    assert float(rows["dev f1"][0]) == round(ours["best"]["dev"]["f1"], 4)
    assert float(rows["dev f1"][1]) == round(peer["epochs"][0]["dev"]["f1"], 4)
    assert float(rows["test f1"][0]) == round(ours["test"]["test"]["f1"], 4)
    assert float(rows["test f1"][1]) == round(peer["test"]["test"]["f1"], 4)
    assert peer["group_by_length"] is True
    # Whole processes are timed: at least the span each one measures of itself.
    assert float(rows["wall time (s)"][1]) >= peer["wall_seconds"] > 0
    assert float(rows["wall time (s)"][0]) > 0
    assert table[-1].startswith("published: CoNLL-2003")
    # A workdir that exists is refused in one line, and nothing in it changes.
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert again.returncode != 0 and "exists" in again.stderr and "Traceback" not in again.stderr
    assert (workdir / "side_by_side.txt").read_text().splitlines() == table
