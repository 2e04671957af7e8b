"""NeoBERT (Le Breton et al. 2025): a deeper, pre-RMSNorm encoder with rotary positions, masked LM only.

    python -m bertjax.pretrain --config=configs/neobert.py --workdir=runs/neobert
    python -m bertjax.pretrain --config=configs/neobert.py:runlocal --workdir=/tmp/neobert

The model as the paper describes it: 28 layers of hidden 768 and 12 heads, pre-LN with RMSNorm and
a final norm, rotary positions, SwiGLU of 2048 per half (2/3 of 3072, rounded to a multiple of 8
as its SwiGLU does), no biases, no token types, BERT's uncased WordPiece vocabulary of 30,522, an
MLM head that decodes the last hidden state directly with a decoder of its own (not tied to the
embeddings): about 245M parameters by bertjax's count against the paper's 250M. Training: 20%
masking, AdamW (0.9, 0.95, eps 1e-8, weight decay 0.1), gradient clipping at 1.0, 2,000 warmup
steps to 6e-4 then cosine decay to 10% of it over 1M steps of 2,048 rows of 1,024 tokens (2M
tokens a step), no dropout; rows of whole sentences of one document, packed.

What differs: the corpus is `data.*` (the paper's is RefinedWeb); the paper's second phase (50k
steps at 4,096 tokens) is a second run with `--config.init=` and a longer `data.max_seq_length`;
NeoBERT's published checkpoint is remote code in transformers, so no Hugging Face class holds
this model (it stays a bertjax checkpoint) and its numerics are tested against the formulas, not
against a reference implementation. Arguments: `runlocal` (a tiny model, seconds).
"""

import ml_collections

from bertjax.config import parse_config_arg, sibling_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_config_arg(arg, known=("runlocal",))
    config = sibling_config(__file__, "pretrain.py", "runlocal" if "runlocal" in args else None)
    model, data, optim, train = config.model, config.data, config.optim, config.train
    model.size = ""
    model.num_hidden_layers, model.hidden_size, model.num_attention_heads = 28, 768, 12
    model.mlp_type, model.hidden_act, model.intermediate_size = "glu", "silu", 2048  # SwiGLU
    model.norm_type, model.layer_norm_position, model.layer_norm_eps = "rmsnorm", "pre", 1e-5
    model.embedding_norm = False
    model.position_embedding_type = "rope"
    model.max_position_embeddings = 4096  # RoPE has no table: the longest row the config accepts
    model.type_vocab_size = 0
    model.attention_bias = model.mlp_bias = model.head_bias = model.norm_bias = False
    model.head_transform = False
    model.tie_word_embeddings = False
    model.hidden_dropout_prob = model.attention_probs_dropout_prob = 0.0
    data.example_format = "documents"
    data.pack_examples = 4
    data.masked_lm_prob = 0.2
    data.max_seq_length, data.max_predictions_per_seq = 1024, round(0.2 * 1024)
    data.masking = "dynamic"
    train.nsp_weight = 0.0
    optim.learning_rate, optim.b1, optim.b2, optim.eps = 6e-4, 0.9, 0.95, 1e-8
    optim.weight_decay, optim.clip_norm = 0.1, 1.0
    optim.warmup_steps = 2000
    optim.schedule, optim.final_learning_rate_fraction = "cosine", 0.1
    train.batch_size, train.num_train_steps = 2048, 1_000_000
    if "runlocal" in args:
        model.num_hidden_layers, model.hidden_size, model.num_attention_heads, model.intermediate_size = 2, 64, 4, 96
        data.max_seq_length, data.max_predictions_per_seq = 64, 13
        train.batch_size, train.num_train_steps = 8, 20
        optim.warmup_steps = 5
    return config
