"""Typed, frozen run configuration: the one place a ConfigDict becomes dataclasses.

Entry points read an ml_collections ConfigDict (from `configs/*.py` plus command-line overrides)
and call `from_config_dict` once. Everything downstream receives these frozen dataclasses, never
the ConfigDict. Unknown keys and bad values raise `ConfigError` with the key's dotted name.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections

from bertjax.errors import ConfigError

# google-research/bert's model sizes (heads = hidden / 64, intermediate = 4 * hidden).
SIZES: dict[str, tuple[int, int]] = {
    "tiny": (2, 128),
    "mini": (4, 256),
    "small": (4, 512),
    "medium": (8, 512),
    "base": (12, 768),
    "large": (24, 1024),
}

# Logical axis name -> mesh axis (or None = replicated). Parameters and activations carry
# different names so that data / FSDP / tensor parallelism is a change of these rules only.
DEFAULT_LOGICAL_AXIS_RULES: tuple[tuple[str, str | None], ...] = (
    # parameters
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("embed_out", "tensor"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("position", None),
    ("token_type", None),
    ("classes", None),
    ("layers", None),  # the stacked layer axis of model.scan_layers
    # activations
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_mlp", "tensor"),
    ("activation_heads", "tensor"),
    ("activation_kv", None),
    ("activation_vocab", "tensor"),
)


# Activation memory for compute: what each encoder layer keeps for the backward pass.
REMAT_POLICIES = ("none", "full", "dots")
ATTENTION_IMPLEMENTATIONS = ("einsum", "xla", "cudnn", "splash")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """BERT hyper-parameters, named as in Hugging Face's BertConfig."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    dtype: str = "float32"  # compute dtype, e.g. "bfloat16"
    param_dtype: str = "float32"
    remat: str = "none"  # per-layer rematerialisation: "none", "full" or "dots" (keep matmul outputs)
    # The encoder layers as one jax.lax.scan over parameters stacked along a "layers" axis: the
    # layer is compiled once, not num_hidden_layers times. Checkpoints and exports keep one
    # parameter per layer either way.
    scan_layers: bool = False
    # "einsum": bertjax's own attention (float32 softmax, dropout on the probabilities). "xla" or
    # "cudnn": jax.nn.dot_product_attention with that implementation ("cudnn": fused attention on an
    # NVIDIA GPU in bfloat16/float16). jax's function has no dropout, so both need
    # attention_probs_dropout_prob=0. "splash": the TPU kernel that skips masked blocks of packed
    # rows and sliding windows (bertjax/model/splash.py; interpreted off TPUs), no dropout, no ALiBi.
    attention: str = "einsum"
    # "einsum" attention computed for this many slices of the batch in turn, each with smaller
    # [rows, heads, query, key] scores (one CPU device: the batch is not sharded; 2 slices make
    # the MiniLM SQuAD step 5-7% faster on 2 cores, docs/performance.md). 1 = the whole batch.
    attention_batch_chunks: int = 1
    # "post": BERT's LayerNorm after each residual add. "pre": before each sublayer, plus one on the
    # last layer's output (pre-LN: stable at the high learning rates of Izsak et al. 2021). Hugging
    # Face's BertModel is post-LN only, so a pre-LN model does not export to it.
    layer_norm_position: str = "post"
    # The architecture knobs below default to BERT; each modern encoder is a set of them
    # (configs/modernbert.py). Names follow Hugging Face's configs where one has the knob.
    # Positions: "absolute" (a learned table added to the embeddings, BERT), "rope" (rotary, applied
    # to queries and keys in every layer; positions restart at each packed segment), "alibi" (a
    # per-head bias -slope * |query - key| on the attention scores: MosaicBERT's symmetric ALiBi),
    # "scaled_sinusoidal" (Vaswani et al.'s fixed sines and cosines times one learned scale that
    # starts at 1 / sqrt(width): Cramming's), "none".
    position_embedding_type: str = "absolute"
    # Learned positions start at this row of the table (RoBERTa: its padding id + 1 = 2).
    position_offset: int = 0
    # Factorised embeddings (ELECTRA, ALBERT): tables of this width, projected to hidden_size after
    # their norm; the MLM head maps back to it for the tied decoder. 0: hidden_size.
    embedding_size: int = 0
    # The Hugging Face model_type whose layout `to-hf` writes: "" infers it from the knobs (bert,
    # roberta, modernbert); "electra" (a BERT encoder under ELECTRA's names) is kept from an import.
    hf_model_type: str = ""
    global_rope_theta: float = 10000.0  # RoPE base of the global-attention layers (ModernBERT: 160000)
    local_rope_theta: float = 10000.0  # RoPE base of the sliding-window layers (ModernBERT: 10000)
    # Sliding-window attention: a layer sees the keys within local_attention / 2 tokens on either
    # side (and of its own segment), except every global_attn_every_n_layers-th layer (0, N, 2N,
    # ...), which sees them all. 0: every layer global. ModernBERT: 128 and 3.
    local_attention: int = 0
    global_attn_every_n_layers: int = 1
    # Feed-forward: "mlp" (dense, activation, dense: BERT) or "glu" (activation(x W_in) * x W_gate,
    # then dense: GeGLU with hidden_act gelu, SwiGLU with silu); intermediate_size is the width of
    # one half, as Hugging Face's ModernBERT and LLaMA configs count it.
    mlp_type: str = "mlp"
    norm_type: str = "layernorm"  # or "rmsnorm" (no mean subtracted, no bias)
    norm_bias: bool = True  # LayerNorm bias (ModernBERT: none)
    attention_bias: bool = True  # biases of the query, key, value and output projections
    mlp_bias: bool = True  # biases of the feed-forward projections
    embedding_norm: bool = True  # a norm after the embeddings
    # Pre-LN only: layer 0 normalises its attention input (False in ModernBERT, whose embeddings
    # end with a norm).
    first_attention_norm: bool = True
    head_bias: bool = True  # the MLM head's transform bias (ModernBERT's classifier_bias)
    decoder_bias: bool = True  # the MLM decoder's output bias
    # The MLM head's dense, activation and norm before the decoder (BERT, ModernBERT); False: the
    # decoder reads the last hidden state as it is (NeoBERT; Cramming's skip_head_transform).
    head_transform: bool = True
    # The decoder is the word-embedding table (BERT); False: a [hidden, vocab] kernel of its own (NeoBERT).
    tie_word_embeddings: bool = True
    # The fine-tuning heads' transform: "pooler" (BERT: dense and tanh on the first token for a
    # sequence's label, none for tokens' labels and spans) or "prediction" (ModernBERT: dense, the
    # activation and a norm, on the pooled state and before every token's and span's classifier).
    classifier_head: str = "pooler"
    classifier_pooling: str = "cls"  # the sequence's state for "prediction": its first token, or "mean"
    # The "pooler" head's non-linearity: "tanh" (BERT, RoBERTa) or "gelu" (ELECTRA's classifier).
    pooler_activation: str = "tanh"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def embedding_width(self) -> int:
        """The width of the embedding tables (`embedding_size`, else hidden_size)."""
        return self.embedding_size or self.hidden_size

    @property
    def max_length(self) -> int:
        """The longest row the positions allow (RoBERTa's table keeps its first rows for padding)."""
        return self.max_position_embeddings - self.position_offset

    @property
    def first_layer_apart(self) -> bool:
        """Whether a scanned encoder runs layer 0 outside its scan: a pre-LN layer 0 without its
        attention norm (ModernBERT) has other parameters than the layers the scan stacks."""
        return self.scan_layers and self.layer_norm_position == "pre" and not self.first_attention_norm

    def is_global_layer(self, index: int) -> bool:
        """Whether layer `index` attends globally (see local_attention)."""
        return not self.local_attention or index % self.global_attn_every_n_layers == 0

    def num_params(self) -> int:
        """Parameters of the encoder + pooler + MLM/NSP heads (tied decoder counted once)."""
        h, i, v = self.hidden_size, self.intermediate_size, self.vocab_size
        norm = h * (2 if self.norm_bias and self.norm_type == "layernorm" else 1)
        positions = self.max_position_embeddings if self.position_embedding_type == "absolute" else 0
        e = self.embedding_width
        embed_norm = e * (2 if self.norm_bias and self.norm_type == "layernorm" else 1)
        embeddings = (v + positions + self.type_vocab_size) * e + (embed_norm if self.embedding_norm else 0)
        embeddings += (e * h + h) if e != h else 0
        embeddings += 1 if self.position_embedding_type == "scaled_sinusoidal" else 0  # its scale
        attention = 4 * (h * h + (h if self.attention_bias else 0))
        halves = 2 if self.mlp_type == "glu" else 1
        mlp = halves * h * i + i * h + ((halves * i + h) if self.mlp_bias else 0)
        skipped = norm if self.layer_norm_position == "pre" and not self.first_attention_norm else 0
        pooler = h * h + h
        if self.classifier_head == "prediction":  # ModernBERT's: dense (head_bias) and a norm
            pooler = h * h + (h if self.head_bias else 0) + norm
        transform = (h * e + (e if self.head_bias else 0)) + embed_norm if self.head_transform else 0
        decoder = (v if self.decoder_bias else 0) + (0 if self.tie_word_embeddings else e * v)
        heads = transform + decoder + (2 * h + 2)
        final_norm = norm if self.layer_norm_position == "pre" else 0
        layers = self.num_hidden_layers * (attention + mlp + 2 * norm) - skipped
        return embeddings + layers + final_norm + pooler + heads

    def electra_generator(self, size: float) -> ModelConfig:
        """ELECTRA's generator for this model as discriminator: `size` times its width, attention
        heads and feed-forward, the same depth, and its embedding tables (projected to the
        generator's width when that differs)."""
        hidden = max(1, round(self.hidden_size * size))
        heads = max(1, round(self.num_attention_heads * size))
        if hidden % heads:
            raise ConfigError(
                f"config key train.generator_size={size}: the generator's width {hidden} does not split into "
                f"{heads} attention heads"
            )
        return dataclasses.replace(
            self,
            hidden_size=hidden,
            num_attention_heads=heads,
            intermediate_size=max(1, round(self.intermediate_size * size)),
            embedding_size=self.embedding_width,
        )

    def train_flops(self, length: int, predictions: int = 0) -> float:
        """Useful FLOPs of training on one sequence of `length` tokens: 3 x the forward pass
        (the backward pass is 2 x), counting the encoder's matmuls, attention's scores and values,
        the pooler, and the MLM head at `predictions` masked positions (0 for fine-tuning)."""
        h, i, v = self.hidden_size, self.intermediate_size, self.vocab_size
        halves = 2 if self.mlp_type == "glu" else 1
        layer = length * (8 * h * h + 2 * (halves + 1) * h * i) + 4 * length * length * h
        forward = self.num_hidden_layers * layer + predictions * (2 * h * h + 2 * h * v) + 2 * h * h
        return 3.0 * forward


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where pretraining text comes from and how examples are built from it."""

    train_files: tuple[str, ...] = ()
    eval_files: tuple[str, ...] = ()
    corpus_format: str = "sentences"  # "sentences" (one per line) or "paragraphs"
    eval_fraction: float = 0.02  # held-out share of documents when eval_files is empty
    max_documents: int = 0  # 0 = all
    tfds_name: str = ""  # e.g. "wikipedia/20230601.en"; used when train_files is empty
    tfds_split: str = "train"
    tfds_eval_split: str = ""  # empty: hold out eval_fraction of tfds_split
    tfds_text_feature: str = "text"
    tfds_data_dir: str = ""
    vocab_file: str = ""  # a WordPiece vocab.txt or a Hugging Face tokenizer.json
    lowercase: bool = True  # vocab.txt only: a tokenizer.json has its own normaliser
    cache_dir: str = ""  # prepared (tokenized) data; empty = <workdir>/data
    max_seq_length: int = 128
    # "pairs": `[CLS] A [SEP] B [SEP]` with next-sentence labels (BERT). "documents": `[CLS] text
    # [SEP]`, whole sentences of one document filling the row, for masked LM alone (RoBERTa's
    # DOC-SENTENCES; with pack_examples > 1, ModernBERT's packed documents); short_seq_prob and
    # random_next_prob are then unused.
    example_format: str = "pairs"
    # The pairs' task: "nsp" (BERT: B continues A, or with random_next_prob is text of another
    # document) or "sop" (ALBERT's sentence order: B always continues A, and with random_next_prob
    # the two are swapped). The label is 1 for a random (NSP) or swapped (SOP) pair.
    pair_task: str = "nsp"
    short_seq_prob: float = 0.1
    random_next_prob: float = 0.5
    masked_lm_prob: float = 0.15
    # The masking rate by training step, "STEP:RATE,STEP:RATE,...": from step STEP on, RATE of the
    # tokens are masked (before the first STEP, masked_lm_prob); e.g. "0:0.3,90000:0.15" for a
    # rate lowered in the last phase, as mmBERT and ModernBERT's decay phase do. Held-out batches
    # keep masked_lm_prob, so evaluations compare across phases.
    masking_phases: str = ""
    # What a chosen token becomes: [MASK] with mask_token_prob, a random token with
    # random_token_prob, else itself (BERT: 0.8 / 0.1; ELECTRA: 0.85 / 0.0).
    mask_token_prob: float = 0.8
    random_token_prob: float = 0.1
    max_predictions_per_seq: int = 20
    whole_word_masking: bool = False
    # SpanBERT's masking (Joshi et al. 2020): spans of whole words, their lengths in words drawn from
    # a geometric distribution with span_length_p truncated to span_max_words, until masked_lm_prob
    # of the tokens are chosen; the 80/10/10 choice is made per span.
    span_masking: bool = False
    span_length_p: float = 0.2
    span_max_words: int = 10
    masking: str = "static"  # "static" (fixed per dupe copy) or "dynamic" (fresh each epoch)
    dupe_factor: int = 1
    pack_examples: int = 1  # > 1: up to this many examples share a row (attention kept within each)
    seed: int = 12345
    num_threads: int = 2  # loader threads that build batches ahead of the step (per process, below)
    # > 0: that many loader processes (grain's mp_prefetch), each building whole batches with its
    # threads; for hosts whose accelerators outrun threads that share one Python interpreter.
    num_processes: int = 0
    # Preparation: processes that pair the dupe_factor copies side by side (the same pairs in any
    # case). 0: one per CPU, at most dupe_factor, once a split has 50M or more tokens to pair in
    # all (below that, starting the processes costs more than it saves); 1: in this process.
    prepare_processes: int = 0

    def masking_schedule(self) -> tuple[tuple[int, float], ...]:
        """`masking_phases` as (first step, rate) pairs in step order; ConfigError if malformed."""
        phases = []
        for part in filter(None, (p.strip() for p in self.masking_phases.split(","))):
            step, _, rate = part.partition(":")
            try:
                phase = (int(step), float(rate))
            except ValueError:
                phase = None
            if phase is None or phase[0] < 0 or not 0.0 < phase[1] < 1.0:
                raise ConfigError(
                    f"config key data.masking_phases: {part!r} is not STEP:RATE (a step >= 0, a rate in (0, 1))"
                )
            if phases and phase[0] <= phases[-1][0]:
                raise ConfigError(f"config key data.masking_phases: steps must increase ({part!r})")
            phases.append(phase)
        return tuple(phases)

    def masking_rate(self, step: int) -> float:
        """The share of tokens masked in training step `step`."""
        rate = self.masked_lm_prob
        for first, phase_rate in self.masking_schedule():
            if step >= first:
                rate = phase_rate
        return rate

    def max_masking_rate(self) -> float:
        """The highest rate of any step (what bounds a packed row's predictions)."""
        return max([self.masked_lm_prob, *(rate for _, rate in self.masking_schedule())])


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Optimizer and learning-rate schedule."""

    # "adamw", "lamb", or "stable_adamw" (Wortsman et al. 2023, ModernBERT's: AdamW whose step on
    # each tensor is divided by max(1, RMS(g^2 / v)), which stands in for gradient clipping)
    optimizer: str = "adamw"
    learning_rate: float = 1e-4
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-6
    # Adam's bias correction of the moments (optax, torch, Hugging Face); False: google-research/bert's
    # AdamWeightDecayOptimizer, m / (sqrt(v) + eps) on the raw moments.
    bias_correction: bool = True
    weight_decay: float = 0.01  # decoupled, scaled by the learning rate (optax / torch AdamW)
    # Parameter names without weight decay (nor, with LAMB, a trust ratio): biases and LayerNorm
    # scales, as google-research/bert; () decays every parameter.
    exclude_from_weight_decay: tuple[str, ...] = ("bias", "scale")
    # After warmup: "linear", "polynomial", "cosine" or "constant"; or "wsd" (warmup-stable-decay:
    # the peak until the last `decay_fraction` of the steps, then a decay of shape `decay_shape`).
    schedule: str = "linear"
    decay_power: float = 1.0  # the power of the "polynomial" decay
    decay_fraction: float = 0.1  # wsd: the share of the schedule's steps that decays
    decay_shape: str = "linear"  # wsd: "linear", "cosine" or "1-sqrt" (Hägele et al. 2024)
    warmup_steps: int = 10000
    warmup_fraction: float = 0.0  # > 0: warmup over this share of all steps instead of warmup_steps
    # Where the warmup starts, as a fraction of the peak (Cramming's budget triangle: 0.25); 0: at 0.
    initial_learning_rate_fraction: float = 0.0
    # The schedule's length in steps (0: this run's steps) and the schedule step this run starts
    # at: a run that is one part of a longer schedule, e.g. google-research/bert's 1M steps split
    # 900k at length 128 + 100k at 512 (phase 2: schedule_steps 1M, schedule_offset 900k).
    schedule_steps: int = 0
    schedule_offset: int = 0
    # The learning rate at the end of the decay, as a fraction of the peak (Composer's alpha_f).
    final_learning_rate_fraction: float = 0.0
    clip_norm: float = 1.0  # global-norm clipping; 0 disables
    grad_accum_steps: int = 1


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The loop: batch, duration, evaluation, checkpoints, logs."""

    batch_size: int = 256  # global, across all devices and accumulation steps
    # Batch-size warmup (ModernBERT), "STEP:SIZE,...": from step STEP on the global batch is SIZE
    # rows; the first phase starts at 0 and the last is batch_size (e.g. "0:64,1000:128,2000:256"
    # with batch_size 256). Rows are read in order across sizes; each size compiles the step once.
    batch_size_phases: str = ""
    num_train_steps: int = 1000000
    eval_every_steps: int = 10000
    eval_batches: int = 50
    # A train step compiled ahead of time for this run's topology (`bertjax.preflight
    # --save_executable=FILE`): run instead of compiling one; refused if it was compiled from
    # another program (this run's traced step is checked against the file's digest).
    compiled_step_file: str = ""
    # Rows per held-out batch (the eval step runs them at once, with no accumulation); 0 = batch_size.
    # Large batches at long lengths need it smaller than the train batch to fit in memory.
    eval_batch_size: int = 0
    checkpoint_every_steps: int = 10000
    keep_checkpoints: int = 3
    log_every_steps: int = 100
    seed: int = 0
    nonfinite: str = "stop"  # a NaN/Inf loss or gradient: "stop" the run, or "skip" the update and count it
    # Weight of the pairs' loss (NSP or SOP: data.pair_task); 0 = MLM only (with data.random_next_prob=0).
    nsp_weight: float = 1.0
    # "mlm": masked LM (+ nsp_weight x NSP or SOP). "electra": replaced-token detection (Clark et
    # al. 2020): a generator, generator_size times the model's width, heads and feed-forward and
    # sharing its embedding tables, fills the masked positions with tokens sampled from its MLM
    # logits; the model (the discriminator) tells every token replaced or original. The loss is
    # the generator's MLM loss + discriminator_weight x the discriminator's (50 in the paper).
    objective: str = "mlm"
    generator_size: float = 0.25
    discriminator_weight: float = 50.0

    def batch_schedule(self) -> tuple[tuple[int, int], ...]:
        """`batch_size_phases` as (first step, size) pairs (one phase of batch_size without any);
        ConfigError if malformed, if the first does not start at step 0 or the last is not
        batch_size."""
        phases: list[tuple[int, int]] = []
        for part in [p.strip() for p in self.batch_size_phases.split(",") if p.strip()]:
            step, _, size = part.partition(":")
            try:
                phase = (int(step), int(size))
            except ValueError:
                phase = None
            if phase is None or phase[0] < 0 or phase[1] < 1:
                raise ConfigError(
                    f"config key train.batch_size_phases: {part!r} is not STEP:SIZE (a step >= 0, a size >= 1)"
                )
            if phases and phase[0] <= phases[-1][0]:
                raise ConfigError(f"config key train.batch_size_phases: steps must increase ({part!r})")
            phases.append(phase)
        if not phases:
            return ((0, self.batch_size),)
        if phases[0][0] != 0 or phases[-1][1] != self.batch_size:
            raise ConfigError(
                f"config key train.batch_size_phases={self.batch_size_phases!r}: the first phase starts at step 0 "
                f"and the last is train.batch_size={self.batch_size}"
            )
        return tuple(phases)

    def eval_rows(self) -> int:
        """Rows per held-out batch: eval_batch_size, or batch_size when it is 0."""
        return self.eval_batch_size or self.batch_size

    def batch_size_at(self, step: int) -> int:
        """The global batch of training step `step`."""
        return [size for first, size in self.batch_schedule() if first <= step][-1]

    def examples_before(self, step: int) -> int:
        """Rows that the steps before `step` read: the sum of their batch sizes."""
        phases = self.batch_schedule()
        ends = [first for first, _ in phases[1:]] + [max(step, phases[-1][0])]
        return sum(size * max(0, min(step, end) - first) for (first, size), end in zip(phases, ends, strict=True))

    # > 0: a wall-clock budget (24hBERT, Cramming). The run trains until this many hours of its loop
    # have passed (or num_train_steps, an upper bound), and the learning-rate schedule runs over the
    # budget: at elapsed share f it is the schedule's value at step f x (optim.schedule_steps, else
    # num_train_steps). The elapsed time is kept in checkpoints, so a resumed run continues it.
    time_budget_hours: float = 0.0


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device mesh sizes (-1 = the remaining devices) and logical-axis rules.

    A `preset` sets the sizes: "dp" (data parallel), "fsdp" (parameters, gradients and optimizer
    state sharded over all devices), "fsdp_tp" (FSDP times 2-way tensor parallelism).
    """

    preset: str = ""  # "", "dp", "fsdp" or "fsdp_tp"; "" = the sizes below
    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    logical_axis_rules: tuple[tuple[str, Any], ...] = DEFAULT_LOGICAL_AXIS_RULES


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """How the processes of a multi-host run find each other (bertjax.distributed)."""

    mode: str = "auto"  # "auto" (TPU pods, SLURM, MPI, JAX_COORDINATOR_ADDRESS), "explicit" or "off"
    coordinator_address: str = ""  # explicit: host:port of process 0, e.g. 127.0.0.1:12355
    num_processes: int = 0  # explicit: how many processes
    process_id: int = -1  # explicit: this process's index
    timeout_seconds: int = 300


MESH_PRESETS: dict[str, dict[str, int]] = {
    "dp": {"data": -1, "fsdp": 1, "tensor": 1},
    "fsdp": {"data": 1, "fsdp": -1, "tensor": 1},
    "fsdp_tp": {"data": 1, "fsdp": -1, "tensor": 2},
}


def mesh_config_from_dict(cd: ml_collections.ConfigDict | dict, prefix: str = "mesh.") -> MeshConfig:
    """A MeshConfig; a preset fills the sizes (and wins over them)."""
    mesh = _build(MeshConfig, cd, prefix)
    if mesh.preset:
        _check_choice(prefix + "preset", mesh.preset, tuple(MESH_PRESETS))
        mesh = dataclasses.replace(mesh, **MESH_PRESETS[mesh.preset])
    return mesh


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Everything `bertjax.pretrain` needs."""

    model: ModelConfig
    data: DataConfig
    optim: OptimConfig
    train: TrainConfig
    mesh: MeshConfig
    init: str = ""  # start from these weights (HF folder, bertjax checkpoint, run directory); "" = random
    # With init a bertjax pretraining run: take its optimizer state too (Adam / LAMB moments), as a
    # second phase that continues the first; the step count and data still start at 0.
    init_optimizer: bool = False
    # With init_optimizer: "continue" the moments' count (Adam's bias correction), or "restart" it at
    # 0 with the moments kept, as NVIDIA's BERT phase 2 (its run_pretraining.py resets the step).
    init_optimizer_count: str = "continue"
    distributed: DistributedConfig = DistributedConfig()


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """What to fine-tune on: a GLUE task, or any labelled text set described by its columns."""

    # A GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli); "custom": any labelled text
    # set; "squad": extractive question answering (SQuAD JSON); "ner": token tagging (CoNLL, JSONL).
    name: str = "mrpc"
    glue_dir: str = ""  # the GLUE directory of TSV files; empty = the TFDS glue/* builders
    tfds_data_dir: str = ""
    max_seq_length: int = 128
    # Each batch is cut to its longest row rounded up to a multiple of this (few shapes to
    # compile, no work on padding columns); 0 = every batch is max_seq_length long.
    pad_to_multiple_of: int = 32
    # At most this many widths (multiples of pad_to_multiple_of, max_seq_length one of them), the
    # ones that leave the run's training batches the fewest padding columns; each width is a
    # shape to compile. 0 = every multiple.
    length_buckets: int = 0
    # Token classification: each batch's examples packed one after another into rows of
    # max_seq_length tokens (attention and positions stay within an example: the same outputs as
    # one padded row each), and the eval splits packed whole into full rows.
    packing: bool = False
    vocab_file: str = ""  # vocab.txt or tokenizer.json; empty = the checkpoint's own tokenizer
    lowercase: bool = True  # used with vocab_file; a checkpoint's vocab keeps its own casing
    # A custom task ("custom"): files (TSV, CSV, JSONL) or a TFDS builder, and their columns.
    kind: str = "classification"  # or "regression"
    labels: tuple[str, ...] = ()  # label strings in id order; empty = the sorted labels of train
    metrics: tuple[str, ...] = ("accuracy",)  # the first decides the best epoch, with the others averaged in
    train_file: str = ""
    dev_file: str = ""
    test_file: str = ""
    file_format: str = ""  # tsv, csv or jsonl; empty = from the file suffix
    header: bool = True
    skip_rows: int = 0  # lines after the header to skip
    text_a: str = "sentence"  # column name (or 0-based index without a header)
    text_b: str = ""  # second text of a pair; empty = single texts
    label: str = "label"
    index: str = ""  # id column written with test predictions; empty = row number
    dev_fraction: float = 0.0  # with no dev data: hold out this share of train as dev
    tfds_name: str = ""
    tfds_train_split: str = "train"
    tfds_dev_split: str = "validation"
    tfds_test_split: str = ""
    published: str = ""  # a published result on this task, printed beside ours at the end
    # Question answering ("squad"): long contexts are cut into windows overlapping by doc_stride
    # tokens; questions are cut to max_query_length tokens.
    doc_stride: int = 128
    max_query_length: int = 64
    n_best_size: int = 20  # start and end candidates per window in decoding
    max_answer_length: int = 30  # tokens
    version_2_with_negative: bool = False  # SQuAD v2.0: unanswerable questions
    null_score_diff_threshold: float = 0.0  # v2.0: predict "no answer" when null - best span > this
    # The span loss's softmax: "context", over the window's context tokens and [CLS] (the no-answer
    # target), the positions decoding chooses from, as the BERT paper defines it ("a softmax over
    # all of the words in the paragraph"); "window", over every token of the window, question and
    # [SEP]s too, as google-research/bert's run_squad and transformers' BertForQuestionAnswering.
    answer_positions: str = "context"
    # QA and tagging: train on this many questions (sentences) drawn with train.seed, and score
    # this many of each eval split (drawn the same way for every run); 0 = all.
    max_train_examples: int = 0
    max_eval_examples: int = 0
    # Tagging ("ner"): the tag scheme the files use (iob1, iob2 or iobes); tags in `labels`, or
    # the sorted tags of train.
    tag_scheme: str = "iob2"


@dataclasses.dataclass(frozen=True)
class FinetuneTrainConfig:
    """The fine-tuning loop."""

    batch_size: int = 32
    num_epochs: float = 3.0
    eval_batch_size: int = 64
    log_every_steps: int = 50
    # A checkpoint (the latest only) at every epoch end, on SIGTERM/SIGINT, and every this many
    # steps (0: not between epochs); the same command resumes from it.
    checkpoint_every_steps: int = 1000
    # Once results.json is written the run cannot resume, so its checkpoint (the last step's
    # parameters and optimizer state: about 1.7 GB at BERT-base) is deleted; best/ is the model.
    keep_checkpoint: bool = False
    seed: int = 0  # classifier init, dropout, example order
    nonfinite: str = "stop"  # a NaN/Inf loss or gradient: "stop" the run, or "skip" the update and count it
    # Batches of rows of similar length (Hugging Face's group_by_length): with task.pad_to_multiple_of,
    # each batch is cut to its own longest row, so short rows stop paying for long ones.
    group_by_length: bool = False

    def eval_rows(self) -> int:
        """Rows per prediction batch (as TrainConfig.eval_rows)."""
        return self.eval_batch_size


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """Everything `bertjax.finetune` needs."""

    init: str  # a HF folder, bertjax model checkpoint or run directory; empty = random init
    model: ModelConfig  # the shape is the checkpoint's; dropout and dtypes come from here
    task: TaskConfig
    optim: OptimConfig
    train: FinetuneTrainConfig
    mesh: MeshConfig
    distributed: DistributedConfig = DistributedConfig()


def parse_config_arg(arg: str | None, known: tuple[str, ...]) -> dict[str, str]:
    """A config file's argument, 'size=mini,runlocal' -> {'size': 'mini', 'runlocal': 'true'}."""
    out = {}
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        out[key.strip()] = value.strip() if value else "true"
    unknown = set(out) - set(known)
    if unknown:
        raise ValueError(f"unknown config argument {sorted(unknown)[0]!r} (known: {', '.join(known)})")
    return out


def apply_overrides(base: ml_collections.ConfigDict, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
    """A copy of `base` with dotted keys set (a sweep's run, a preflight suggestion); an unknown key
    is a ConfigError."""
    config = copy.deepcopy(base)
    with config.unlocked():
        for key, value in overrides.items():
            *parents, leaf = key.split(".")
            node = config
            for part in parents:
                if part not in node:
                    raise ConfigError(f"sweep override {key}: unknown config key")
                node = node[part]
            if leaf not in node:
                raise ConfigError(f"sweep override {key}: unknown config key")
            current = node[leaf]
            node[leaf] = float(value) if isinstance(current, float) and isinstance(value, int) else value
    return config


def load_config_module(path: str | Path) -> types.ModuleType:
    """A config file as a module (configs/ is not a package: config files are loaded by path)."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"bertjax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sibling_config(config_file: str, name: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """`get_config(arg)` of the config file `name` next to `config_file` (for configs built on another)."""
    return load_config_module(Path(config_file).with_name(name)).get_config(arg)


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"config key {key}={value!r}: expected one of {', '.join(choices)}")


def _convert(value: Any, hint: Any, key: str) -> Any:
    """Coerce a ConfigDict leaf to the dataclass field type (tuples from lists, ints to float)."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        if isinstance(value, str):
            value = tuple(v for v in value.split(",") if v)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], key) for v in value)
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    if origin in (typing.Union, types.UnionType):
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float) and isinstance(value, bool):
        raise ConfigError(f"config key {key}: expected {hint.__name__}, got {value!r}")
    if hint in (int, float, str, bool) and not isinstance(value, hint):
        raise ConfigError(f"config key {key}: expected {hint.__name__}, got {value!r}")
    return value


def _at_least(low: float) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v >= low), f">= {low}"


def _above(low: float) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v > low), f"> {low}"


def _between(low: float, high: float, high_open: bool = False) -> tuple[Callable[[Any], bool], str]:
    if high_open:
        return (lambda v: low <= v < high), f"in [{low}, {high})"
    return (lambda v: low <= v <= high), f"in [{low}, {high}]"


def _open_unit() -> tuple[Callable[[Any], bool], str]:
    return (lambda v: 0.0 < v < 1.0), "in (0, 1)"


def _mesh_size() -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v >= 1 or v == -1), ">= 1, or -1 for the devices left over"


_POSITIVE, _NATURAL, _PROBABILITY = _at_least(1), _at_least(0), _between(0.0, 1.0)

# The range of every numeric config value, checked where the ConfigDict becomes dataclasses, so
# that no value out of range reaches the model, the loader or the optimizer.
RANGES: dict[type, dict[str, tuple[Callable[[Any], bool], str]]] = {
    ModelConfig: {
        "vocab_size": _NATURAL,  # 0: the vocab's size
        "hidden_size": _POSITIVE,
        "num_hidden_layers": _POSITIVE,
        "num_attention_heads": _POSITIVE,
        "attention_batch_chunks": _POSITIVE,
        "intermediate_size": _POSITIVE,
        "max_position_embeddings": _POSITIVE,
        "type_vocab_size": _NATURAL,  # 0: no token types (RoBERTa, ModernBERT)
        "local_attention": _NATURAL,
        "position_offset": _NATURAL,
        "embedding_size": _NATURAL,
        "global_attn_every_n_layers": _POSITIVE,
        "global_rope_theta": _above(0.0),
        "local_rope_theta": _above(0.0),
        "hidden_dropout_prob": _between(0.0, 1.0, high_open=True),
        "attention_probs_dropout_prob": _between(0.0, 1.0, high_open=True),
        "initializer_range": _above(0.0),
        "layer_norm_eps": _above(0.0),
    },
    DataConfig: {
        "eval_fraction": _between(0.0, 1.0, high_open=True),
        "max_documents": _NATURAL,
        "short_seq_prob": _PROBABILITY,
        "random_next_prob": _PROBABILITY,
        "masked_lm_prob": _open_unit(),
        "mask_token_prob": _PROBABILITY,
        "random_token_prob": _PROBABILITY,
        "max_predictions_per_seq": _POSITIVE,
        "span_length_p": _open_unit(),
        "span_max_words": _POSITIVE,
        "dupe_factor": _POSITIVE,
        "pack_examples": _between(1, 16),
        "seed": _NATURAL,
        "num_threads": _POSITIVE,
        "num_processes": _NATURAL,  # 0: threads only
        "prepare_processes": _NATURAL,  # 0: auto
    },
    OptimConfig: {
        "learning_rate": _NATURAL,
        "b1": _between(0.0, 1.0, high_open=True),
        "b2": _between(0.0, 1.0, high_open=True),
        "eps": _NATURAL,
        "weight_decay": _NATURAL,
        "decay_power": _above(0.0),
        "decay_fraction": _between(0.0, 1.0),
        "warmup_steps": _NATURAL,
        "schedule_steps": _NATURAL,
        "schedule_offset": _NATURAL,
        "final_learning_rate_fraction": _PROBABILITY,
        "initial_learning_rate_fraction": _PROBABILITY,
        "warmup_fraction": _between(0.0, 1.0, high_open=True),
        "clip_norm": _NATURAL,
        "grad_accum_steps": _POSITIVE,
    },
    TrainConfig: {
        "batch_size": _POSITIVE,
        "num_train_steps": _POSITIVE,
        "eval_every_steps": _POSITIVE,
        "eval_batches": _POSITIVE,
        "eval_batch_size": _NATURAL,
        "checkpoint_every_steps": _POSITIVE,
        "keep_checkpoints": _POSITIVE,
        "log_every_steps": _POSITIVE,
        "seed": _NATURAL,
        "nsp_weight": _NATURAL,
        "generator_size": ((lambda v: 0.0 < v <= 1.0), "in (0, 1]"),
        "discriminator_weight": _NATURAL,
        "time_budget_hours": _NATURAL,
    },
    FinetuneTrainConfig: {
        "batch_size": _POSITIVE,
        "num_epochs": _above(0.0),
        "eval_batch_size": _POSITIVE,
        "log_every_steps": _POSITIVE,
        "checkpoint_every_steps": _NATURAL,  # 0: only at epoch ends
        "seed": _NATURAL,
    },
    TaskConfig: {
        "max_seq_length": _at_least(8),
        "pad_to_multiple_of": _NATURAL,
        "length_buckets": _NATURAL,
        "skip_rows": _NATURAL,
        "dev_fraction": _between(0.0, 1.0, high_open=True),
        "doc_stride": _POSITIVE,
        "max_query_length": _POSITIVE,
        "n_best_size": _POSITIVE,
        "max_answer_length": _POSITIVE,
        "max_train_examples": _NATURAL,
        "max_eval_examples": _NATURAL,
    },
    MeshConfig: {"data": _mesh_size(), "fsdp": _mesh_size(), "tensor": _mesh_size()},
    DistributedConfig: {"num_processes": _NATURAL, "process_id": _at_least(-1), "timeout_seconds": _POSITIVE},
}


def check_ranges(cfg: Any, prefix: str) -> None:
    """Raises ConfigError naming the first field of `cfg` out of its range (RANGES)."""
    for name, (ok, expected) in RANGES.get(type(cfg), {}).items():
        value = getattr(cfg, name)
        if not ok(value):
            raise ConfigError(f"config key {prefix}{name}={value} must be {expected}")


def _build(cls: type, cd: ml_collections.ConfigDict | dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in dict(cd).items():
        if key not in names:
            raise ConfigError(f"unknown config key {prefix}{key}")
        kwargs[key] = _convert(value, hints[key], prefix + key)
    built = cls(**kwargs)
    check_ranges(built, prefix)
    return built


def model_config_from_dict(cd: ml_collections.ConfigDict | dict, prefix: str = "model.") -> ModelConfig:
    """Builds a ModelConfig; `size` (a SIZES name) fills the shape fields that are not set."""
    cd = dict(cd)
    size = cd.pop("size", None)
    if size:
        if size not in SIZES:
            raise ConfigError(f"config key {prefix}size={size!r}: unknown size, expected one of {', '.join(SIZES)}")
        layers, hidden = SIZES[size]
        shape = dict(
            num_hidden_layers=layers,
            hidden_size=hidden,
            num_attention_heads=hidden // 64,
            intermediate_size=4 * hidden,
        )
        for k, v in shape.items():
            if cd.get(k) is None:
                cd[k] = v
    cd = {k: v for k, v in cd.items() if v is not None}
    model = _build(ModelConfig, cd, prefix)
    if model.hidden_size % model.num_attention_heads:
        raise ConfigError(
            f"config key {prefix}hidden_size={model.hidden_size} is not divisible by "
            f"num_attention_heads={model.num_attention_heads}"
        )
    _check_choice(prefix + "dtype", model.dtype, ("float32", "bfloat16", "float16"))
    _check_choice(prefix + "param_dtype", model.param_dtype, ("float32", "bfloat16"))
    _check_choice(prefix + "hidden_act", model.hidden_act, ("gelu", "gelu_new", "relu", "silu"))
    _check_choice(
        prefix + "position_embedding_type",
        model.position_embedding_type,
        ("absolute", "rope", "alibi", "scaled_sinusoidal", "none"),
    )
    _check_choice(prefix + "mlp_type", model.mlp_type, ("mlp", "glu"))
    _check_choice(prefix + "norm_type", model.norm_type, ("layernorm", "rmsnorm"))
    _check_choice(prefix + "classifier_head", model.classifier_head, ("pooler", "prediction"))
    _check_choice(prefix + "classifier_pooling", model.classifier_pooling, ("cls", "mean"))
    _check_choice(prefix + "pooler_activation", model.pooler_activation, ("tanh", "gelu"))
    _check_choice(prefix + "hf_model_type", model.hf_model_type, ("", "bert", "roberta", "modernbert", "electra"))
    if model.position_embedding_type == "scaled_sinusoidal" and model.embedding_width % 2:
        raise ConfigError(
            f"config key {prefix}position_embedding_type='scaled_sinusoidal' needs an even embedding width, "
            f"not {model.embedding_width}"
        )
    if model.position_embedding_type == "rope" and model.head_dim % 2:
        raise ConfigError(
            f"config key {prefix}position_embedding_type='rope' needs an even head size, not {model.head_dim}"
        )
    _check_choice(prefix + "remat", model.remat, tuple(REMAT_POLICIES))
    _check_choice(prefix + "attention", model.attention, ATTENTION_IMPLEMENTATIONS)
    _check_choice(prefix + "layer_norm_position", model.layer_norm_position, ("post", "pre"))
    if model.attention == "splash" and model.position_embedding_type == "alibi":
        raise ConfigError(
            f"config key {prefix}attention='splash' takes no score bias: ALiBi needs attention 'einsum' or 'xla'"
        )
    if model.attention != "einsum" and model.attention_probs_dropout_prob:
        raise ConfigError(
            f"config key {prefix}attention={model.attention!r} has no attention dropout: "
            f"set {prefix}attention_probs_dropout_prob=0 (it is {model.attention_probs_dropout_prob})"
        )
    if model.attention == "cudnn" and model.dtype == "float32":
        raise ConfigError(f"config key {prefix}attention='cudnn' needs {prefix}dtype bfloat16 or float16")
    if not model.head_transform and model.tie_word_embeddings and model.embedding_width != model.hidden_size:
        raise ConfigError(
            f"config key {prefix}head_transform=False with a tied decoder needs {prefix}embedding_size equal to "
            f"hidden_size (it is {model.embedding_size}): nothing maps the hidden state to the table's width"
        )
    return model


def _check_schedule(optim: OptimConfig, run_steps: int | None) -> None:
    """An offset needs the whole schedule's length, and the run ends within the schedule (the values'
    ranges are in RANGES)."""
    if optim.schedule_offset and not optim.schedule_steps:
        raise ConfigError("config key optim.schedule_offset needs optim.schedule_steps (the whole schedule's length)")
    if run_steps is not None and optim.schedule_steps and optim.schedule_offset + run_steps > optim.schedule_steps:
        raise ConfigError(
            f"config keys optim.schedule_offset={optim.schedule_offset} + train.num_train_steps={run_steps} "
            f"go past optim.schedule_steps={optim.schedule_steps}"
        )


def _optim_and_loop(cd: ml_collections.ConfigDict, train_cls: type) -> tuple[OptimConfig, Any, DistributedConfig]:
    """The optim, train and distributed sections, which pretraining and fine-tuning share in kind."""
    optim = _build(OptimConfig, cd.get("optim", {}), "optim.")
    train = _build(train_cls, cd.get("train", {}), "train.")
    distributed = _build(DistributedConfig, cd.get("distributed", {}), "distributed.")
    _check_choice("distributed.mode", distributed.mode, ("auto", "explicit", "off"))
    _check_choice("optim.optimizer", optim.optimizer, ("adamw", "lamb", "stable_adamw"))
    _check_choice("optim.schedule", optim.schedule, ("linear", "polynomial", "cosine", "constant", "wsd"))
    _check_choice("optim.decay_shape", optim.decay_shape, ("linear", "cosine", "1-sqrt"))
    _check_choice("train.nonfinite", train.nonfinite, ("stop", "skip"))
    if train.batch_size % optim.grad_accum_steps:
        raise ConfigError(
            f"config key train.batch_size={train.batch_size} is not divisible by "
            f"optim.grad_accum_steps={optim.grad_accum_steps}"
        )
    return optim, train, distributed


def from_config_dict(cd: ml_collections.ConfigDict) -> PretrainConfig:
    """Turns the run's ConfigDict into a validated PretrainConfig."""
    sections = {
        "init",
        "init_optimizer",
        "init_optimizer_count",
        "model",
        "data",
        "optim",
        "train",
        "mesh",
        "distributed",
    }
    for key in cd.keys():
        if key not in sections:
            raise ConfigError(f"unknown config key {key}")
    model = model_config_from_dict(cd.get("model", {}))
    data = _build(DataConfig, cd.get("data", {}), "data.")
    optim, train, distributed = _optim_and_loop(cd, TrainConfig)
    mesh = mesh_config_from_dict(cd.get("mesh", {}))
    validate_data(data, model)
    _check_choice("train.objective", train.objective, ("mlm", "electra"))
    for _, size in train.batch_schedule():  # a malformed train.batch_size_phases is a ConfigError here
        if size % optim.grad_accum_steps:
            raise ConfigError(
                f"config key train.batch_size_phases: a batch of {size} is not divisible by "
                f"optim.grad_accum_steps={optim.grad_accum_steps}"
            )
    if train.objective == "electra":
        if train.nsp_weight:
            raise ConfigError(
                f"config key train.objective='electra' has no next-sentence task: set train.nsp_weight=0 "
                f"(it is {train.nsp_weight})"
            )
        model.electra_generator(train.generator_size)  # its shape is checked here
    if data.example_format == "documents" and train.nsp_weight:
        raise ConfigError(
            f"config key data.example_format='documents' has no next-sentence task: set train.nsp_weight=0 "
            f"(it is {train.nsp_weight})"
        )
    _check_schedule(optim, train.num_train_steps)
    init = cd.get("init", "")
    if not isinstance(init, str):
        raise ConfigError(f"config key init: expected a path, got {init!r}")
    init_optimizer = cd.get("init_optimizer", False)
    if not isinstance(init_optimizer, bool):
        raise ConfigError(f"config key init_optimizer: expected True or False, got {init_optimizer!r}")
    if init_optimizer and not init:
        raise ConfigError("config key init_optimizer=True needs init (a bertjax pretraining run directory)")
    init_optimizer_count = cd.get("init_optimizer_count", "continue")
    _check_choice("init_optimizer_count", init_optimizer_count, ("continue", "restart"))
    if init_optimizer_count == "restart" and not init_optimizer:
        raise ConfigError("config key init_optimizer_count='restart' needs init_optimizer=True")
    return PretrainConfig(
        model=model,
        data=data,
        optim=optim,
        train=train,
        mesh=mesh,
        init=init,
        init_optimizer=init_optimizer,
        init_optimizer_count=init_optimizer_count,
        distributed=distributed,
    )


def finetune_config_from_dict(cd: ml_collections.ConfigDict) -> FinetuneConfig:
    """Turns a fine-tuning ConfigDict into a validated FinetuneConfig."""
    sections = {"init", "model", "task", "optim", "train", "mesh", "distributed"}
    for key in cd.keys():
        if key not in sections:
            raise ConfigError(f"unknown config key {key}")
    init = cd.get("init", "")
    if not isinstance(init, str):
        raise ConfigError(f"config key init: expected a path, got {init!r}")
    model = model_config_from_dict(cd.get("model", {}))
    task = _build(TaskConfig, cd.get("task", {}), "task.")
    optim, train, distributed = _optim_and_loop(cd, FinetuneTrainConfig)
    mesh = mesh_config_from_dict(cd.get("mesh", {}))
    _check_choice("task.kind", task.kind, ("classification", "regression"))
    _check_schedule(optim, None)  # the run's steps follow from the data
    _check_choice("task.tag_scheme", task.tag_scheme, ("iob1", "iob2", "iobes"))
    _check_choice("task.answer_positions", task.answer_positions, ("context", "window"))
    if task.file_format:
        _check_choice("task.file_format", task.file_format, ("tsv", "csv", "jsonl", "conll", "json"))
    if task.name == "squad" and task.max_query_length + 3 >= task.max_seq_length:
        raise ConfigError(
            f"config key task.max_query_length={task.max_query_length} leaves no room for the context in "
            f"task.max_seq_length={task.max_seq_length}"
        )
    if task.name == "squad" and task.doc_stride >= task.max_seq_length - task.max_query_length - 3:
        raise ConfigError(
            f"config key task.doc_stride={task.doc_stride} must be below the context's share of a window, "
            f"task.max_seq_length - task.max_query_length - 3 = {task.max_seq_length - task.max_query_length - 3}"
        )
    return FinetuneConfig(
        init=init, model=model, task=task, optim=optim, train=train, mesh=mesh, distributed=distributed
    )


def validate_data(data: DataConfig, model: ModelConfig) -> None:
    """Checks the example-building settings: their ranges, and against each other and the model."""
    if data.max_seq_length < 8:
        raise ConfigError(f"config key data.max_seq_length={data.max_seq_length} is below the minimum of 8")
    if data.max_seq_length > model.max_length:
        raise ConfigError(
            f"config key data.max_seq_length={data.max_seq_length} exceeds "
            f"model.max_position_embeddings={model.max_position_embeddings}"
            + (f" less model.position_offset={model.position_offset}" if model.position_offset else "")
        )
    check_ranges(data, "data.")  # also for a DataConfig made in code, not from a ConfigDict
    _check_choice("data.corpus_format", data.corpus_format, ("sentences", "paragraphs"))
    _check_choice("data.masking", data.masking, ("static", "dynamic"))
    data.masking_schedule()  # a malformed data.masking_phases is a ConfigError here
    if data.mask_token_prob + data.random_token_prob > 1:
        raise ConfigError(
            f"config keys data.mask_token_prob={data.mask_token_prob} and data.random_token_prob="
            f"{data.random_token_prob} add up to more than 1"
        )
    _check_choice("data.example_format", data.example_format, ("pairs", "documents"))
    _check_choice("data.pair_task", data.pair_task, ("nsp", "sop"))
    if not data.train_files and not data.tfds_name:
        raise ConfigError("config: set data.train_files or data.tfds_name")
    if not data.vocab_file:
        raise ConfigError("config key data.vocab_file is empty")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(cfg)
