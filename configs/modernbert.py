"""ModernBERT's architecture (Warner et al. 2024), pretrained with masked LM only at 30% masking.

    python -m bertjax.pretrain --config=configs/modernbert.py:size=base --workdir=runs/modernbert
    python -m bertjax.pretrain --config=configs/modernbert.py:runlocal --workdir=/tmp/modernbert

The model is transformers' ModernBertConfig at base (22 layers, hidden 768, 12 heads, GeGLU of
1152) or large (28 layers, hidden 1024, 16 heads, GeGLU of 2624): rotary positions with base
160,000 on the global layers and 10,000 on the sliding-window ones, a window of 128 tokens on
every layer but each third, pre-LN without biases and without layer 0's attention norm, no token
types, the decoder tied to the embeddings with a bias. `python -m bertjax.convert to-hf` writes
it as a Hugging Face ModernBertForMaskedLM; `--config.init=` reads a ModernBERT folder's weights.

What differs from the paper's recipe: the tokenizer is the WordPiece vocab of `data.vocab_file`
unless it names ModernBERT's own byte-level BPE tokenizer.json
(`--config.data.vocab_file=<folder>/tokenizer.json`; the embedding table has ModernBERT's 50,368
rows either way); dropout sits where BERT has it (ModernBERT's defaults are 0, as here).

Training follows the paper's first phase: StableAdamW (betas 0.9 / 0.98, eps 1e-6), peak lr 8e-4
(base) / 5e-4 (large), weight decay 1e-5 fully decoupled from the rate (Composer's decoupled
decay: optax's 1e-5 / peak), off biases and norms, no gradient clipping; 1.7T tokens in rows of
1024; the batch grows from 768 (base) / 448 (large) rows in equal steps of that size over the
first 50B / 10B tokens (an equal share of them at each size) to 4608 / 4928 rows
(`train.batch_size_phases`); warmup over the first 3B / 2B tokens; warmup-stable-decay with a
1-sqrt cooldown over the last 50B tokens. What differs: ModernBERT's batch grows continuously
(here in those steps), and the paper extends the context to 8192 tokens at a lower rate before
the cooldown (a second run here, --config.init= with the longer data.max_seq_length).
Rows are whole sentences of one document
(`data.example_format="documents"`), up to 4 documents' ends packed in a row with attention and
positions kept within each, where ModernBERT packs unpadded documents without a row structure.
Arguments: `size=base|large` (default base), `runlocal` (a tiny model, seconds).
"""

import ml_collections

from bertjax.config import parse_config_arg, sibling_config

SHAPES = {  # layers, hidden, heads, GeGLU intermediate (one half)
    "base": (22, 768, 12, 1152),
    "large": (28, 1024, 16, 2624),
}


TRAINING = {  # peak learning rate, batch (rows of 1024 tokens), warmup tokens, first batch, its ramp's tokens
    "base": (8e-4, 4608, 3e9, 768, 50e9),
    "large": (5e-4, 4928, 2e9, 448, 10e9),
}
TOKENS, COOLDOWN_TOKENS, ROW = 1.7e12, 50e9, 1024


def batch_warmup(batch: int, first: int, ramp_tokens: float) -> list[tuple[int, int]]:
    """(first step, size) of each batch size: first, 2 x first, ... up to batch, the sizes below
    batch sharing ramp_tokens equally."""
    phases, step = [], 0
    sizes = list(range(first, batch, first))
    for size in sizes:
        phases.append((step, size))
        step += round(ramp_tokens / len(sizes) / (size * ROW))
    return [*phases, (step, batch)]


def steps_for_tokens(phases: list[tuple[int, int]], tokens: float) -> int:
    """The steps that read `tokens` tokens under the batch phases."""
    for (first, size), (end, _) in zip(phases, phases[1:] + [(None, None)], strict=True):
        rows = tokens / ROW
        if end is None or rows <= (end - first) * size:
            return first + round(rows / size)
        tokens -= (end - first) * size * ROW
    raise AssertionError("unreachable")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_config_arg(arg, known=("size", "runlocal"))
    config = sibling_config(__file__, "pretrain.py", "runlocal" if "runlocal" in args else None)
    model = config.model
    size = args.get("size", "base")
    if size not in SHAPES:
        raise ValueError(f"configs/modernbert.py: size={size!r}, expected one of {', '.join(SHAPES)}")
    model.size = ""
    model.num_hidden_layers, model.hidden_size, model.num_attention_heads, model.intermediate_size = SHAPES[size]
    model.vocab_size = 50368  # ModernBERT's table (a smaller vocab file leaves rows unused)
    model.max_position_embeddings = 8192  # RoPE has no table: the longest row the config accepts
    model.type_vocab_size = 0
    model.hidden_dropout_prob = 0.0
    model.attention_probs_dropout_prob = 0.0
    model.layer_norm_eps = 1e-5
    model.layer_norm_position = "pre"
    model.first_attention_norm = False  # the embeddings' norm is layer 0's
    model.position_embedding_type = "rope"
    model.global_rope_theta = 160000.0
    model.local_rope_theta = 10000.0
    model.local_attention = 128
    model.global_attn_every_n_layers = 3
    model.mlp_type = "glu"
    model.norm_bias = model.attention_bias = model.mlp_bias = model.head_bias = False
    model.decoder_bias = True
    model.classifier_head = "prediction"  # fine-tuning: ModernBERT's dense, activation and norm
    model.classifier_pooling = "cls"
    config.data.masked_lm_prob = 0.3
    config.data.example_format = "documents"  # [CLS] text [SEP]: masked LM only
    config.data.pack_examples = 4  # documents' short ends share rows (attention kept within each)
    config.train.nsp_weight = 0.0
    optim, train = config.optim, config.train
    lr, batch, warmup, first_batch, ramp_tokens = TRAINING[size]
    phases = batch_warmup(batch, first_batch, ramp_tokens)
    train.batch_size_phases = ",".join(f"{step}:{rows}" for step, rows in phases)
    optim.optimizer = "stable_adamw"
    optim.learning_rate, optim.b2, optim.eps = lr, 0.98, 1e-6
    optim.weight_decay = 1e-5 / lr  # Composer's fully decoupled 1e-5: weights x (1 - 1e-5 lr_t / lr_peak)
    optim.clip_norm = 0.0
    train.batch_size, train.num_train_steps = batch, steps_for_tokens(phases, TOKENS)
    optim.schedule, optim.decay_shape = "wsd", "1-sqrt"
    optim.decay_fraction = round(COOLDOWN_TOKENS / (batch * ROW)) / train.num_train_steps
    optim.final_learning_rate_fraction = 0.0
    optim.warmup_steps = steps_for_tokens(phases, warmup)
    config.data.max_seq_length, config.data.max_predictions_per_seq = ROW, round(0.3 * ROW)
    if "runlocal" in args:
        model.num_hidden_layers, model.hidden_size, model.num_attention_heads, model.intermediate_size = 4, 64, 4, 96
        model.local_attention = 16
        model.vocab_size = 0  # the vocab file's size
        config.data.max_seq_length, config.data.max_predictions_per_seq = 64, 20
        train.batch_size, train.num_train_steps, optim.warmup_steps = 8, 20, 5
        train.batch_size_phases = "0:4,5:8"
    return config
