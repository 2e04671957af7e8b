"""BERT pretraining (masked LM + next sentence prediction), google-research/bert defaults.

    python -m bertjax.pretrain --config=configs/pretrain.py:size=mini --workdir=runs/mini

The argument after the colon is a comma-separated list: `size=<tiny|mini|small|medium|base|large>`
and `runlocal` (shrink the run to seconds for debugging). Any field can be overridden on the
command line, e.g. `--config.optim.learning_rate=5e-4 --config.data.masked_lm_prob=0.3`.
By default the data are the sample corpus and vocab that `make data` fetches into data/samples.
"""

from collections.abc import Callable

import ml_collections
from ml_collections.config_dict import placeholder

from bertjax.config import DEFAULT_LOGICAL_AXIS_RULES, parse_config_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_config_arg(arg, known=("size", "runlocal"))
    config = ml_collections.ConfigDict()
    config.init = ""  # start from pretrained weights (HF folder, bertjax checkpoint, run dir); "" = random
    config.init_optimizer = False  # init is a pretraining run: take its optimizer state too (a second phase)
    config.init_optimizer_count = "continue"  # or "restart" the moments' count at 0 (NVIDIA's phase 2)

    config.model = model = ml_collections.ConfigDict()
    model.size = args.get("size", "base")  # a row of the size table: sets layers, hidden, heads, intermediate
    model.vocab_size = 0  # 0 = the vocab file's size; larger pads the embedding table
    model.num_hidden_layers = placeholder(int)  # None = from size
    model.hidden_size = placeholder(int)  # None = from size
    model.num_attention_heads = placeholder(int)  # None = from size (hidden / 64)
    model.intermediate_size = placeholder(int)  # None = from size (4 * hidden)
    model.hidden_act = "gelu"  # exact erf GELU, as BERT
    model.max_position_embeddings = 512
    model.type_vocab_size = 2
    model.hidden_dropout_prob = 0.1
    model.attention_probs_dropout_prob = 0.1
    model.initializer_range = 0.02  # stddev of the truncated-normal initialiser
    model.layer_norm_eps = 1e-12
    model.dtype = "float32"  # compute dtype: float32 or bfloat16
    model.param_dtype = "float32"  # parameter (and optimizer state) dtype
    model.remat = "none"  # "full" or "dots": recompute layer activations in the backward pass (less memory)
    model.scan_layers = False  # True: the layers as one scan (compiled once; same checkpoints)
    # "einsum" (with attention dropout), or jax.nn.dot_product_attention: "cudnn" (fused, NVIDIA GPU,
    # bf16) or "xla"; or "splash" (TPU kernel skipping masked blocks); those need attention_probs_dropout_prob = 0
    model.attention = "einsum"
    model.layer_norm_position = "post"  # BERT's; "pre": LayerNorm before each sublayer + one at the end
    # Architecture knobs (BERT's values; configs/modernbert.py sets ModernBERT's):
    model.position_embedding_type = (
        "absolute"  # learned table; "rope", "alibi" (MosaicBERT), "scaled_sinusoidal" (Cramming), "none"
    )
    model.position_offset = 0  # learned positions start at this row (RoBERTa: 2)
    model.embedding_size = 0  # > 0: narrower embedding tables projected to hidden_size (ELECTRA, ALBERT)
    model.global_rope_theta = 10000.0  # RoPE base of the global-attention layers
    model.local_rope_theta = 10000.0  # RoPE base of the sliding-window layers
    model.local_attention = 0  # > 0: sliding windows of this many tokens, ...
    model.global_attn_every_n_layers = 1  # ... except every N-th layer (0, N, 2N, ...), which is global
    model.mlp_type = "mlp"  # "glu": gated (GeGLU with gelu, SwiGLU with silu; intermediate_size per half)
    model.norm_type = "layernorm"  # or "rmsnorm"
    model.norm_bias = True  # LayerNorm biases
    model.attention_bias = True  # query/key/value/output projection biases
    model.mlp_bias = True  # feed-forward biases
    model.embedding_norm = True  # a norm after the embeddings
    model.first_attention_norm = True  # pre-LN: layer 0 normalises its attention input
    model.head_bias = True  # the MLM head's transform bias
    model.decoder_bias = True  # the MLM decoder's output bias
    model.classifier_head = "pooler"  # fine-tuning heads: BERT's tanh pooler, or ModernBERT's "prediction" head
    model.classifier_pooling = "cls"  # "prediction" on the first token, or the "mean" of the tokens

    config.data = data = ml_collections.ConfigDict()
    data.train_files = "data/samples/news.txt"  # comma-separated glob patterns of text files
    data.eval_files = ""  # held-out text files; empty = hold out eval_fraction of the documents
    data.corpus_format = "paragraphs"  # "sentences": one per line; "paragraphs": split for you
    data.eval_fraction = 0.02
    data.max_documents = 0  # 0 = all documents
    data.tfds_name = ""  # a TFDS text dataset instead of files, e.g. "wikipedia/20230601.en"
    data.tfds_split = "train"
    data.tfds_eval_split = ""  # empty = hold out eval_fraction of tfds_split
    data.tfds_text_feature = "text"
    data.tfds_data_dir = ""  # where TFDS keeps prepared data ("" = its default)
    data.vocab_file = "data/samples/vocab.txt"  # WordPiece vocab.txt, or any HF tokenizer.json
    data.lowercase = True
    data.cache_dir = ""  # tokenized, paired data is stored here; "" = <workdir>/data
    data.max_seq_length = 128
    # "pairs" ([CLS] A [SEP] B [SEP], next-sentence labels) or "documents" ([CLS] text [SEP], whole
    # sentences of one document filling the row: masked LM only, with train.nsp_weight = 0)
    data.example_format = "pairs"
    data.short_seq_prob = 0.1  # share of pairs with a shorter random target length
    data.pair_task = "nsp"  # or "sop": ALBERT's sentence order (B always follows A; pairs swapped instead)
    data.random_next_prob = 0.5  # share of pairs whose segment B is from another document (SOP: swapped)
    data.masked_lm_prob = 0.15
    data.masking_phases = ""  # "STEP:RATE,...": the masking rate from STEP on (held-out batches keep the above)
    data.mask_token_prob = 0.8  # a chosen token becomes [MASK] (ELECTRA: 0.85) ...
    data.random_token_prob = 0.1  # ... or a random token (ELECTRA: 0); else it stays
    data.max_predictions_per_seq = 20
    data.whole_word_masking = False
    data.span_masking = False  # SpanBERT: spans of whole words (geometric lengths), one 80/10/10 choice each
    data.span_length_p = 0.2  # the geometric distribution's p (mean span about 3.8 words)
    data.span_max_words = 10  # its truncation
    # Sequence packing: > 1 puts up to this many short examples in one row, each attending only
    # to itself, with its own positions and NSP prediction (Krell et al. 2021). 1 = one per row.
    data.pack_examples = 1
    data.masking = "static"  # "static" (google-research/bert) or "dynamic" (new masks each epoch)
    data.dupe_factor = 1  # copies of the corpus with different pairings (google uses 10 with static masks)
    data.seed = 12345
    data.num_threads = 2  # threads building batches ahead of the train step
    data.num_processes = 0  # > 0: loader processes instead (a GPU host: about one per two cores)
    data.prepare_processes = 0  # pairing the dupe_factor copies: 0 one process per CPU on big corpora, 1 none

    config.optim = optim = ml_collections.ConfigDict()
    optim.optimizer = "adamw"  # "adamw", "lamb" or "stable_adamw" (ModernBERT's: per-tensor update clipping)
    optim.learning_rate = 1e-4  # peak
    optim.b1 = 0.9
    optim.b2 = 0.999
    optim.eps = 1e-6
    optim.bias_correction = True  # Adam's; False: google-research/bert's optimizer, which has none
    optim.weight_decay = 0.01  # not applied to biases and LayerNorm
    optim.exclude_from_weight_decay = ["bias", "scale"]  # no decay (nor LAMB trust ratio) on these
    optim.schedule = "linear"  # after warmup: "linear" decay to 0, "cosine", "constant", "polynomial" or "wsd"
    optim.decay_power = 1.0  # power of the "polynomial" schedule (LAMB recipes use 0.5)
    optim.decay_fraction = 0.1  # "wsd" (warmup-stable-decay): the last share of the steps, which decays
    optim.decay_shape = "linear"  # "wsd": "linear", "cosine" or "1-sqrt"
    optim.warmup_steps = 10000
    optim.warmup_fraction = 0.0  # > 0: warm up over this share of all steps (overrides warmup_steps)
    optim.initial_learning_rate_fraction = 0.0  # the warmup starts at this fraction of the peak
    optim.schedule_steps = 0  # the schedule's length (0 = num_train_steps); longer when this run is one part
    optim.schedule_offset = 0  # the schedule step this run starts at (two-phase recipes: experiments/)
    optim.final_learning_rate_fraction = 0.0  # where the decay ends, as a fraction of the peak
    optim.clip_norm = 1.0  # global-norm clipping; 0 disables
    optim.grad_accum_steps = 1  # microbatches per step (batch_size must divide)

    config.train = train = ml_collections.ConfigDict()
    train.batch_size = 256  # global batch, all devices and accumulation steps together
    train.batch_size_phases = ""  # "STEP:SIZE,...": batch-size warmup; the last SIZE is batch_size
    train.num_train_steps = 1000000
    train.eval_every_steps = 10000
    train.eval_batches = 50
    train.eval_batch_size = 0  # rows per held-out batch, run at once (no accumulation); 0 = batch_size
    train.compiled_step_file = ""  # a train step compiled by `bertjax.preflight --save_executable`
    train.checkpoint_every_steps = 10000
    train.keep_checkpoints = 3
    train.log_every_steps = 100
    train.seed = 0  # parameter init and dropout
    train.nonfinite = "stop"  # NaN/Inf loss or gradient: "stop" (keep the last good checkpoint) or "skip" the update
    train.nsp_weight = 1.0  # weight of the NSP loss; 0 with data.random_next_prob=0 = MLM only (RoBERTa-style)
    # "mlm" (masked LM + nsp_weight x NSP/SOP) or "electra" (replaced-token detection, nsp_weight 0):
    # a generator of generator_size x the width shares the embeddings; loss = MLM + weight x RTD.
    train.objective = "mlm"
    train.generator_size = 0.25
    train.discriminator_weight = 50.0
    train.time_budget_hours = 0.0  # > 0: stop after this many hours; the lr schedule runs over the elapsed share

    config.mesh = mesh = ml_collections.ConfigDict()
    mesh.preset = ""  # "dp", "fsdp" or "fsdp_tp" set the sizes below; "" = use them as given
    mesh.data = -1  # -1 = the devices left over
    mesh.fsdp = 1  # FSDP: parameters, gradients and optimizer state split over these devices
    mesh.tensor = 1  # tensor parallelism: attention heads, MLP and vocab split over these devices
    mesh.logical_axis_rules = [list(r) for r in DEFAULT_LOGICAL_AXIS_RULES]  # logical name -> mesh axis

    config.distributed = distributed = ml_collections.ConfigDict()
    distributed.mode = "auto"  # "auto": TPU pods, SLURM, MPI, JAX_COORDINATOR_ADDRESS; "explicit"; "off"
    distributed.coordinator_address = ""  # explicit: host:port of process 0 (bound on that address only)
    distributed.num_processes = 0  # explicit: how many processes
    distributed.process_id = -1  # explicit: this process's index
    distributed.timeout_seconds = 300

    if "runlocal" in args:
        model.size = args.get("size", "tiny")
        data.max_seq_length = 64
        data.max_predictions_per_seq = 10
        train.batch_size = 8
        train.num_train_steps = 20
        train.eval_every_steps = 10
        train.eval_batches = 2
        train.checkpoint_every_steps = 10
        train.log_every_steps = 5
        optim.warmup_steps = 5
    return config


def sweep(add: Callable[..., None]) -> None:
    """`python -m bertjax.sweep --config=configs/pretrain.py:size=mini --workdir=DIR`: peak learning
    rate x masking rate (with a predictions cap that holds it at length 128) x schedule after
    warmup, one seed each (12 runs), tabulated by final held-out MLM accuracy."""
    for learning_rate in (1e-4, 2e-4, 5e-4):
        for rate, cap in ((0.15, 20), (0.3, 40)):
            for schedule in ("linear", "wsd"):
                add(
                    **{
                        "optim.learning_rate": learning_rate,
                        "data.masked_lm_prob": rate,
                        "data.max_predictions_per_seq": cap,
                        "optim.schedule": schedule,
                    }
                )
