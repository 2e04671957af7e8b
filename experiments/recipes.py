"""Pretraining recipes from the literature, as configs for `python -m bertjax.pretrain`.

    python -m bertjax.pretrain --config=experiments/recipes.py:recipe=bert,size=base,phase=1 --workdir=runs/bert_base_p1
    python -m bertjax.pretrain --config=experiments/recipes.py:recipe=bert,size=base,phase=2 --workdir=runs/bert_base_p2 \\
        --config.init=runs/bert_base_p1

recipe=<bert|lamb|academic|mosaic|cramming>, size=<base|large> (each recipe has its paper's default),
phase=<1|2> for the two-phase recipes (phase 2: sequence length 512, started from phase 1's
run directory through config.init: its weights and, with init_optimizer, its optimizer moments),
`runlocal` (the recipe's architecture and objective at a tiny size on the sample corpus, seconds).
RoBERTa, ELECTRA and ModernBERT are config files of their own (configs/roberta.py, electra.py,
modernbert.py). The corpus defaults to TFDS English Wikipedia
(`wikipedia/20230601.en`; BookCorpus, the papers' other half, is not in TFDS: add it as text
files). Batch sizes are global; set mesh.* and optim.grad_accum_steps for your hardware.
experiments/README.md lists each recipe's source and the figures it should reach.
"""

from pathlib import Path

import ml_collections

from bertjax.config import load_config_module, parse_config_arg

DEFAULT_SIZE = {"bert": "base", "lamb": "large", "academic": "large", "mosaic": "base", "cramming": "base"}


def _base(size: str) -> ml_collections.ConfigDict:
    pretrain = load_config_module(Path(__file__).resolve().parents[1] / "configs" / "pretrain.py")
    config = pretrain.get_config(f"size={size}")
    config.data.train_files = ""
    config.data.tfds_name = "wikipedia/20230601.en"
    config.data.corpus_format = "paragraphs"
    config.data.vocab_file = "data/samples/vocab.txt"  # bert-base-uncased WordPiece (make data)
    config.train.eval_every_steps = 10000
    config.train.checkpoint_every_steps = 5000
    return config


def bert(config: ml_collections.ConfigDict, phase: int) -> None:
    """Devlin et al. 2018: 1M steps of 256 sequences, 90% at length 128 then 10% at 512, on one
    learning-rate schedule (10k warmup steps to 1e-4, linear decay to 0 at step 1M) that phase 2
    continues from step 900k (at 1e-5), with phase 1's Adam moments (init_optimizer); its AdamW
    without bias correction, as google-research/bert's."""
    config.optim.optimizer = "adamw"
    config.optim.learning_rate = 1e-4
    config.optim.warmup_steps = 10000
    config.optim.weight_decay = 0.01
    config.optim.schedule_steps = 1_000_000
    config.optim.bias_correction = False  # google-research/bert's AdamWeightDecayOptimizer has none
    config.train.batch_size = 256
    config.data.dupe_factor = 10  # google-research/bert's static masks, ten copies
    if phase == 1:
        config.data.max_seq_length, config.data.max_predictions_per_seq = 128, 20
        config.train.num_train_steps = 900_000
    else:
        config.data.max_seq_length, config.data.max_predictions_per_seq = 512, 80
        config.train.num_train_steps = 100_000
        config.optim.schedule_offset = 900_000
        config.init_optimizer = True


def lamb(config: ml_collections.ConfigDict, phase: int) -> None:
    """You et al. 2019 (LAMB), the 64k/32k mixed-batch schedule: 7,038 + 1,563 steps."""
    config.optim.optimizer = "lamb"
    config.optim.schedule = "polynomial"
    config.optim.decay_power = 0.5
    config.optim.weight_decay = 0.01
    config.optim.warmup_steps = 0
    if phase == 1:
        config.data.max_seq_length, config.data.max_predictions_per_seq = 128, 20
        config.train.batch_size, config.train.num_train_steps = 65536, 7038
        config.optim.learning_rate, config.optim.warmup_fraction = 6e-3, 0.2843
    else:
        config.data.max_seq_length, config.data.max_predictions_per_seq = 512, 80
        config.train.batch_size, config.train.num_train_steps = 32768, 1563
        config.optim.learning_rate, config.optim.warmup_fraction = 4e-3, 0.128
        # NVIDIA's phase 2 loads phase 1's optimizer state with a new schedule, and sets the LAMB
        # step count (its bias correction) back to 0 (run_pretraining.py, DeepLearningExamples).
        config.init_optimizer = True
        config.init_optimizer_count = "restart"
    config.train.checkpoint_every_steps = 200


def academic(config: ml_collections.ConfigDict, phase: int) -> None:
    """Izsak et al. 2021 (24hBERT, BERT on an academic budget): BERT-large with pre-LN layers (what
    lets it train at lr 1e-3), length 128 only, MLM only, batch 4096, peak lr 1e-3 warmed up over
    6% then decayed linearly, AdamW betas (0.9, 0.98), no gradient clipping (their repository's
    best configuration), on a 24-hour budget (8 V100s in the paper): `train.time_budget_hours=24`
    stops the run after 24 hours and runs the warmup and decay over the elapsed share of them, as
    their time-based schedule does; num_train_steps is only an upper bound."""
    del phase
    config.train.time_budget_hours = 24.0
    config.model.layer_norm_position = "pre"
    config.optim.clip_norm = 0.0
    config.optim.learning_rate = 1e-3
    config.optim.b2 = 0.98
    config.optim.warmup_steps = 0
    config.optim.warmup_fraction = 0.06
    config.train.batch_size = 4096
    config.train.num_train_steps = 1_000_000  # an upper bound: the budget ends the run
    config.train.nsp_weight = 0.0
    config.data.random_next_prob = 0.0
    config.data.max_seq_length, config.data.max_predictions_per_seq = 128, 20
    config.data.masking = "dynamic"


def mosaic(config: ml_collections.ConfigDict, phase: int) -> None:
    """Portes et al. 2023 (MosaicBERT-base), as mosaicml/examples' mosaic-bert-base-uncased.yaml
    sets it. Architecture: BERT-base with ALiBi in place of learned positions, a gated feed-forward
    (GeGLU, 3072 wide per half), the vocabulary padded to 30,528 rows, no attention dropout (so
    model.attention=cudnn may run it on a GPU); unpadding is bertjax's packing (rows of whole
    sentences of documents, up to 4 documents' ends per row, attention and ALiBi distances kept
    within each). Training: 30% masking, MLM only, lr 5e-4 warmed up over 6% and decayed linearly
    to 2% of it, batch 4096, 70k steps at length 128, Composer's DecoupledAdamW (0.9, 0.98, eps
    1e-6, weight decay 1e-5 per step at the peak, on every parameter), no gradient clipping. What
    differs: MosaicBERT's GLU input projection has no bias (bertjax's mlp_bias covers both
    projections: 73,728 more parameters); its corpus is C4 (set data.*)."""
    del phase
    config.model.position_embedding_type = "alibi"
    config.model.mlp_type = "glu"  # GeGLU with hidden_act gelu; intermediate_size 3072 per half
    config.model.vocab_size = 30528  # a multiple of 64
    config.data.example_format = "documents"
    config.data.pack_examples = 4
    config.optim.learning_rate = 5e-4
    config.optim.b2 = 0.98
    # Composer multiplies weights by (1 - 1e-5 * lr_t / lr_peak) each step; optax's AdamW by
    # (1 - weight_decay * lr_t): the same decay is weight_decay = 1e-5 / 5e-4.
    config.optim.weight_decay = 1e-5 / 5e-4
    config.optim.exclude_from_weight_decay = []
    config.optim.final_learning_rate_fraction = 0.02
    config.optim.clip_norm = 0.0
    config.model.attention_probs_dropout_prob = 0.0
    config.optim.warmup_steps = 0
    config.optim.warmup_fraction = 0.06
    config.train.batch_size = 4096
    config.train.num_train_steps = 70_000
    config.train.nsp_weight = 0.0
    config.data.random_next_prob = 0.0
    config.data.masked_lm_prob = 0.3
    config.data.max_seq_length, config.data.max_predictions_per_seq = 128, 40
    config.data.masking = "dynamic"


def cramming(config: ml_collections.ConfigDict, phase: int) -> None:
    """Geiping and Goldstein 2023 (Cramming: a BERT on one GPU in one day), the crammed-bert
    architecture and bert-o4 training of their repository. Architecture: 16 pre-LN layers, hidden
    768, 12 heads, a gated feed-forward (GELU-GLU: 3072 split into two halves of 1536), scaled
    sinusoidal positions, no token types, no biases in any dense layer nor on the decoder, a norm
    after the embeddings and after the last layer, an MLM head that decodes the last hidden state
    with the tied table directly (their skip_head_transform), no dropout while pretraining. Training: MLM only
    at 25% (80/10/10), rows of 128 tokens filled from documents, AdamW (0.9, 0.98, eps 1e-12,
    weight decay 0.01 off biases and norms), gradient clipping at 0.5, batch 8192, lr 1e-3 on a
    24-hour budget with their budget-triangle2 schedule: from 25% of the peak up to the peak at
    75% of the budget, then down to 0 at its end. What differs: their batch grows to 8192 over the
    first 60% of the budget (here 8192 throughout), their tokenizer is their own 32,768-token
    WordPiece (here data.vocab_file's)."""
    del phase
    model = config.model
    model.num_hidden_layers, model.hidden_size, model.num_attention_heads = 16, 768, 12
    model.mlp_type, model.intermediate_size = "glu", 1536
    model.layer_norm_position = "pre"
    model.position_embedding_type = "scaled_sinusoidal"
    model.type_vocab_size = 0
    model.attention_bias = model.mlp_bias = model.head_bias = model.decoder_bias = False
    model.head_transform = False
    model.hidden_dropout_prob = model.attention_probs_dropout_prob = 0.0
    config.optim.learning_rate = 1e-3
    config.optim.b2, config.optim.eps, config.optim.weight_decay = 0.98, 1e-12, 0.01
    config.optim.clip_norm = 0.5
    config.optim.warmup_steps = 0
    config.optim.warmup_fraction = 0.75
    config.optim.initial_learning_rate_fraction = 0.25
    config.train.time_budget_hours = 24.0
    config.train.batch_size = 8192
    config.train.num_train_steps = 900_000  # an upper bound, as theirs: the budget ends the run
    config.train.nsp_weight = 0.0
    config.data.example_format = "documents"
    config.data.pack_examples = 4
    config.data.masked_lm_prob = 0.25
    config.data.max_seq_length, config.data.max_predictions_per_seq = 128, 32
    config.data.masking = "dynamic"


RECIPES = {"bert": bert, "lamb": lamb, "academic": academic, "mosaic": mosaic, "cramming": cramming}


def runlocal(config: ml_collections.ConfigDict) -> None:
    """The recipe's architecture and objective at a tiny size, on the sample corpus, for seconds."""
    model, train = config.model, config.train
    model.num_hidden_layers, model.hidden_size, model.num_attention_heads = 2, 64, 4
    model.intermediate_size = 96 if model.mlp_type == "glu" else 128
    model.vocab_size = 0
    config.data.train_files = "data/samples/news.txt"
    config.data.tfds_name = ""
    config.data.max_seq_length = 64
    config.data.max_predictions_per_seq = max(10, round(64 * config.data.masked_lm_prob))
    config.data.max_documents = 200
    config.data.dupe_factor = 1
    config.init, config.init_optimizer, config.init_optimizer_count = "", False, "continue"
    config.optim.schedule_steps, config.optim.schedule_offset = 0, 0
    config.optim.warmup_steps = 0 if config.optim.warmup_fraction else 5
    train.batch_size, train.num_train_steps = 8, 20
    train.eval_every_steps = train.checkpoint_every_steps = 10
    train.eval_batches, train.log_every_steps = 2, 5
    if train.time_budget_hours:
        train.time_budget_hours = 0.05  # three minutes at most


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_config_arg(arg, known=("recipe", "size", "phase", "runlocal"))
    recipe = args.get("recipe", "bert")
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r} (known: {', '.join(RECIPES)})")
    config = _base(args.get("size", DEFAULT_SIZE[recipe]))
    RECIPES[recipe](config, int(args.get("phase", "1")))
    if "runlocal" in args:
        runlocal(config)
    return config
