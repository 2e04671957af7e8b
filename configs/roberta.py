"""RoBERTa's architecture (Liu et al. 2019), pretrained with masked LM only, dynamic masks.

    python -m bertjax.pretrain --config=configs/roberta.py:size=base --workdir=runs/roberta
    python -m bertjax.pretrain --config=configs/roberta.py:runlocal --workdir=/tmp/roberta

The model is BERT's encoder as transformers' RobertaConfig has it at base (12 layers, hidden 768,
125M parameters) or large (24 layers, hidden 1024, 355M): learned positions from row 2 of a
514-row table (rows 0-1 belong to the padding id), one token type, LayerNorm eps 1e-5, a
50,265-row embedding table (GPT-2's byte-level BPE). `python -m bertjax.convert to-hf` writes a
Hugging Face RobertaForMaskedLM; `--config.init=` reads a RoBERTa folder's weights.

The optimisation follows the paper's Table 9: Adam with beta2 0.98 and eps 1e-6, weight decay
0.01, peak learning rate 6e-4 (base) / 4e-4 (large) after 24k / 30k warmup steps, linear decay
over 500k steps of 8k sequences of 512 tokens, masks drawn anew each epoch, no next-sentence
task, rows of whole sentences of one document (`<s> text </s>`: the paper's DOC-SENTENCES,
`data.example_format="documents"`). What differs: the tokenizer is `data.vocab_file` (WordPiece by
default; RoBERTa's own byte-level BPE tokenizer.json where you have it,
`--config.data.vocab_file=<folder>/tokenizer.json`), and batches have a fixed number of rows (the
paper grows DOC-SENTENCES batches to keep their token count). Arguments: `size=base|large`
(default base), `runlocal` (a tiny model, seconds).
"""

import ml_collections

from bertjax.config import parse_config_arg, sibling_config

SHAPES = {  # layers, hidden, heads, intermediate, peak learning rate, warmup steps
    "base": (12, 768, 12, 3072, 6e-4, 24000),
    "large": (24, 1024, 16, 4096, 4e-4, 30000),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_config_arg(arg, known=("size", "runlocal"))
    config = sibling_config(__file__, "pretrain.py", "runlocal" if "runlocal" in args else None)
    model, data, optim, train = config.model, config.data, config.optim, config.train
    size = args.get("size", "base")
    if size not in SHAPES:
        raise ValueError(f"configs/roberta.py: size={size!r}, expected one of {', '.join(SHAPES)}")
    layers, hidden, heads, intermediate, optim.learning_rate, optim.warmup_steps = SHAPES[size]
    model.size = ""
    model.num_hidden_layers, model.hidden_size = layers, hidden
    model.num_attention_heads, model.intermediate_size = heads, intermediate
    model.vocab_size = 50265
    model.max_position_embeddings = 514
    model.position_offset = 2  # the padding id (1) + 1
    model.type_vocab_size = 1
    model.layer_norm_eps = 1e-5
    data.max_seq_length = 512
    data.max_predictions_per_seq = 77  # 15% of 512
    data.example_format = "documents"  # <s> text </s>, masked LM only
    data.masking = "dynamic"
    train.nsp_weight = 0.0
    optim.b2, optim.eps, optim.weight_decay = 0.98, 1e-6, 0.01
    train.batch_size = 8192
    train.num_train_steps = 500_000
    if "runlocal" in args:
        model.num_hidden_layers, model.hidden_size, model.num_attention_heads, model.intermediate_size = 2, 64, 4, 128
        model.vocab_size = 0  # the vocab file's size
        data.max_seq_length, data.max_predictions_per_seq = 64, 10
        train.batch_size, train.num_train_steps, optim.warmup_steps = 8, 20, 5
    return config
