"""Fine-tune BERT for named entities (token classification) on CoNLL-2003 or any tagged files.

    python -m bertjax.finetune --config=configs/ner.py --config.init=CKPT --workdir=runs/ner
    python -m bertjax.sweep --config=configs/ner.py --config.init=CKPT --workdir=runs/sweeps/ner

Files are CoNLL (a token per line, its tag in the last column, a blank line between sentences)
or JSONL (`{"tokens": [...], "tags": [...]}`); by default the English CoNLL-2003 files that
`make data-ner` fetches. Scores are entity-level precision, recall and F1 (conlleval's rules),
micro and per type; the dev F1 picks the best epoch. The argument `runlocal` runs a few steps.
"""

from collections.abc import Callable

import ml_collections

from bertjax.config import sibling_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = sibling_config(__file__, "glue.py", arg)  # the same model, optimizer and loop settings as GLUE
    task = config.task
    task.name = "ner"
    task.train_file = "data/samples/conll2003/train.txt"
    task.dev_file = "data/samples/conll2003/valid.txt"  # empty: hold out dev_fraction of train
    task.test_file = "data/samples/conll2003/test.txt"  # predicted (and scored, if tagged) with the best epoch
    task.file_format = ""  # conll or jsonl; empty = jsonl for .jsonl/.json files, else conll
    task.tag_scheme = "iob2"  # iob1, iob2 (BIO) or iobes: the tags the files use
    task.labels = ""  # comma-separated tags in id order; empty = the sorted tags of train
    task.dev_fraction = 0.0
    task.max_train_examples = 0  # train on this many sentences drawn with train.seed; 0 = all
    task.max_eval_examples = 0  # score this many dev sentences (the same for every run); 0 = all
    task.max_seq_length = 128  # a longer sentence continues in a second window: every word is tagged
    # Each batch's sentences packed one after another into rows of max_seq_length (attention and
    # positions kept within each sentence: the same outputs as one padded row each), not a padded
    # row per sentence; eval splits are packed whole into full rows.
    task.packing = False
    task.published = "CoNLL-2003 test F1: BERT-base 92.4, BERT-large 92.8 (Devlin et al. 2018)"
    config.optim.learning_rate = 5e-5
    config.train.batch_size = 32
    config.train.num_epochs = 3.0
    return config


def sweep(add: Callable[..., None]) -> None:
    """The BERT paper's fine-tuning grid over the learning rate and epochs, two seeds."""
    for learning_rate in (5e-5, 3e-5, 2e-5):
        for epochs in (3, 4):
            for seed in (0, 1):
                add(**{"optim.learning_rate": learning_rate, "train.num_epochs": epochs, "train.seed": seed})
