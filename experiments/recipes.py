"""Pretraining recipes from the literature, as configs for `python -m bertjax.pretrain`.

    python -m bertjax.pretrain --config=experiments/recipes.py:recipe=bert,size=base,phase=1 --workdir=runs/bert_base_p1
    python -m bertjax.pretrain --config=experiments/recipes.py:recipe=bert,size=base,phase=2 --workdir=runs/bert_base_p2 \\
        --config.init=runs/bert_base_p1

recipe=<bert|lamb|academic|mosaic>, size=<base|large> (each recipe has its paper's default),
phase=<1|2> for the two-phase recipes (phase 2: sequence length 512, started from phase 1's
run directory through config.init: its weights and, with init_optimizer, its optimizer moments). The corpus defaults to TFDS English Wikipedia
(`wikipedia/20230601.en`; BookCorpus, the papers' other half, is not in TFDS: add it as text
files). Batch sizes are global; set mesh.* and optim.grad_accum_steps for your hardware.
experiments/README.md lists each recipe's source and the figures it should reach.
"""

from pathlib import Path

import ml_collections

from bertjax.config import load_config_module, parse_config_arg

DEFAULT_SIZE = {"bert": "base", "lamb": "large", "academic": "large", "mosaic": "base"}


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
    """Izsak et al. 2021 (BERT on an academic budget): BERT-large with pre-LN layers (what lets it
    train at lr 1e-3), length 128 only, MLM only, batch 4096, peak lr 1e-3 warmed up over 6%,
    AdamW betas (0.9, 0.98), no gradient clipping (their repository's best configuration). The
    paper stops on a 24-hour budget on 8 V100s, not at a step count: set num_train_steps to what
    yours buys."""
    del phase
    config.model.layer_norm_position = "pre"
    config.optim.clip_norm = 0.0
    config.optim.learning_rate = 1e-3
    config.optim.b2 = 0.98
    config.optim.warmup_steps = 0
    config.optim.warmup_fraction = 0.06
    config.train.batch_size = 4096
    config.train.num_train_steps = 20_000
    config.train.nsp_weight = 0.0
    config.data.random_next_prob = 0.0
    config.data.max_seq_length, config.data.max_predictions_per_seq = 128, 20
    config.data.masking = "dynamic"


def mosaic(config: ml_collections.ConfigDict, phase: int) -> None:
    """Portes et al. 2023 (MosaicBERT) training recipe on the standard BERT architecture, as
    mosaicml/examples' mosaic-bert-base-uncased.yaml sets it: 30% masking, lr 5e-4 warmed up over
    6% and decayed linearly to 2% of it, batch 4096, 70k steps at length 128, MLM only, Composer's
    DecoupledAdamW (0.9, 0.98, eps 1e-6, weight decay 1e-5 per step at the peak, on every
    parameter), no gradient clipping, no attention dropout (so model.attention=cudnn may run it on
    a GPU). (MosaicBERT's own architecture changes, ALiBi, GLU and unpadding, are not part of
    bertjax.)"""
    del phase
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


RECIPES = {"bert": bert, "lamb": lamb, "academic": academic, "mosaic": mosaic}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_config_arg(arg, known=("recipe", "size", "phase"))
    recipe = args.get("recipe", "bert")
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r} (known: {', '.join(RECIPES)})")
    config = _base(args.get("size", DEFAULT_SIZE[recipe]))
    RECIPES[recipe](config, int(args.get("phase", "1")))
    return config
