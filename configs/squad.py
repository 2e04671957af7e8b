"""Fine-tune BERT for extractive question answering on SQuAD v1.1, v2.0 or any SQuAD-layout files.

    python -m bertjax.finetune --config=configs/squad.py --config.init=CKPT --workdir=runs/squad
    python -m bertjax.finetune --config=configs/squad.py:v2 --config.init=CKPT --workdir=runs/squad2 \\
        --config.task.train_file=train-v2.0.json --config.task.dev_file=dev-v2.0.json

Defaults follow the BERT paper (section 4.2: 3 epochs, learning rate 5e-5, batch 32) with
Hugging Face run_qa's windows (384 tokens, 128 overlapping, questions cut to 64). The dev split
is scored with the official scripts' exact match and F1 each epoch; the files are those `make
data-qa` fetches. Arguments: `v2` (unanswerable questions), `runlocal` (a few steps).
"""

from collections.abc import Callable

import ml_collections

from bertjax.config import parse_config_arg, sibling_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_config_arg(arg, known=("v2", "size", "runlocal"))
    passed = ",".join(f"{k}={v}" if v != "true" else k for k, v in args.items() if k != "v2")
    config = sibling_config(__file__, "glue.py", passed)  # the same model, optimizer and loop settings as GLUE
    task = config.task
    task.name = "squad"
    task.train_file = "data/samples/squad/train-v1.1.json"
    task.dev_file = "data/samples/squad/dev-v1.1.json"
    task.test_file = ""  # a SQuAD-layout file to predict (and score, if it has answers)
    task.max_train_examples = 0  # train on this many questions drawn with train.seed; 0 = all
    task.max_eval_examples = 0  # score this many dev questions (the same for every run); 0 = all
    task.max_seq_length = 384
    task.doc_stride = 128  # windows overlap by this many tokens
    task.max_query_length = 64
    task.n_best_size = 20
    task.max_answer_length = 30
    task.version_2_with_negative = "v2" in args
    task.null_score_diff_threshold = 0.0  # v2: tune on dev (results.json has best_f1_thresh)
    task.answer_positions = "context"  # span softmax over the context and [CLS] (the paper's); "window": all tokens
    task.published = "SQuAD v1.1 dev EM/F1: BERT-base 80.8/88.5, BERT-large 84.1/90.9 (Devlin et al. 2018)"
    if "v2" in args:
        task.published = "SQuAD v2.0 dev F1: BERT-large 78.7 (Devlin et al. 2018, test 83.1)"
    config.optim.learning_rate = 5e-5
    config.train.batch_size = 32
    config.train.num_epochs = 3.0 if "v2" not in args else 2.0
    config.train.eval_batch_size = 64
    if "runlocal" in args:
        task.max_seq_length = 64
        task.doc_stride = 16
        task.max_query_length = 16
    return config


def sweep(add: Callable[..., None]) -> None:
    """Learning rate and epochs around the paper's setting, two seeds."""
    for learning_rate in (5e-5, 3e-5):
        for epochs in (2, 3):
            for seed in (0, 1):
                add(**{"optim.learning_rate": learning_rate, "train.num_epochs": epochs, "train.seed": seed})
