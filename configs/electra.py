"""ELECTRA (Clark et al. 2020): replaced-token detection, a generator and a discriminator trained jointly.

    python -m bertjax.pretrain --config=configs/electra.py:size=small --workdir=runs/electra_small
    python -m bertjax.pretrain --config=configs/electra.py:runlocal --workdir=/tmp/electra

The values are the paper's Table 6 (pre-training hyper-parameters) at small or base: the
discriminator is BERT's encoder (small: 12 layers, hidden 256, 4 heads, feed-forward 1024, 128-wide
embedding tables projected up; base: BERT-base), the generator `generator_size` times its width,
heads and feed-forward (1/4 small, 1/3 base), sharing its embedding tables; 15% of the tokens
chosen, 85% of those shown as [MASK] and the rest left as they are; the discriminator's loss
weighted 50; Adam (eps 1e-6) with weight decay 0.01, 10k warmup steps then linear decay; batch 128
of 128 tokens for 1M steps (small), 256 of 512 tokens for 766k steps (base). Rows are whole
sentences of one document with no next-sentence task (`data.example_format="documents"`).
`python -m bertjax.convert to-hf` writes both halves as Hugging Face ElectraForPreTraining (the
discriminator) and ElectraForMaskedLM (the generator).

What differs: the corpus is `data.*` (the paper's is Wikipedia + BooksCorpus, or for the 1.75M-step
models also ClueWeb, CommonCrawl and Gigaword), the vocabulary is `data.vocab_file`'s (the paper:
BERT's uncased WordPiece, the default here). Arguments: `size=small|base` (default small),
`runlocal` (a tiny model, seconds).
"""

import ml_collections

from bertjax.config import parse_config_arg, sibling_config

SIZES = {  # layers, hidden, heads, feed-forward, embedding width, generator size, lr, batch, length, steps
    "small": (12, 256, 4, 1024, 128, 1 / 4, 5e-4, 128, 128, 1_000_000),
    "base": (12, 768, 12, 3072, 768, 1 / 3, 2e-4, 256, 512, 766_000),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_config_arg(arg, known=("size", "runlocal"))
    config = sibling_config(__file__, "pretrain.py", "runlocal" if "runlocal" in args else None)
    model, data, optim, train = config.model, config.data, config.optim, config.train
    size = args.get("size", "small")
    if size not in SIZES:
        raise ValueError(f"configs/electra.py: size={size!r}, expected one of {', '.join(SIZES)}")
    layers, hidden, heads, ffn, embedding, generator, lr, batch, length, steps = SIZES[size]
    model.size = ""
    model.num_hidden_layers, model.hidden_size, model.num_attention_heads = layers, hidden, heads
    model.intermediate_size = ffn
    model.embedding_size = embedding if embedding != hidden else 0
    model.pooler_activation = "gelu"  # ELECTRA's classification head, for fine-tuning
    train.objective = "electra"
    train.generator_size = generator
    train.discriminator_weight = 50.0
    train.nsp_weight = 0.0
    data.example_format = "documents"
    data.masked_lm_prob = 0.15
    data.mask_token_prob, data.random_token_prob = 0.85, 0.0
    data.masking = "dynamic"
    data.max_seq_length, data.max_predictions_per_seq = length, round(0.15 * length)
    optim.learning_rate, optim.eps, optim.weight_decay = lr, 1e-6, 0.01
    optim.warmup_steps = 10000
    train.batch_size, train.num_train_steps = batch, steps
    if "runlocal" in args:
        model.num_hidden_layers, model.hidden_size, model.num_attention_heads, model.intermediate_size = 2, 64, 4, 128
        model.embedding_size = 32
        train.generator_size = 0.5
        data.max_seq_length, data.max_predictions_per_seq = 64, 10
        train.batch_size, train.num_train_steps = 8, 20
        optim.warmup_steps = 5
    return config
