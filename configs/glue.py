"""Fine-tune BERT on a GLUE task (Devlin et al. 2018, section 4.1 and appendix A.3).

    python -m bertjax.finetune --config=configs/glue.py:task=mrpc --config.init=CKPT --workdir=runs/mrpc \\
        [--config.task.glue_dir=glue_data]      # the GLUE TSV directory; without it TFDS glue/* is read
    python -m bertjax.sweep --config=configs/glue.py:task=rte --config.init=CKPT --workdir=runs/sweeps/rte

The argument: `task=<cola|sst2|mrpc|stsb|qqp|mnli|qnli|rte|wnli>`, `size=...` (only for a random
init, without `init`), `runlocal` (a few steps, for debugging). CKPT is a Hugging Face BERT folder,
a bertjax model checkpoint or a pretraining run directory. `sweep` below is the paper's grid.
"""

from collections.abc import Callable

import ml_collections

from bertjax.config import DEFAULT_LOGICAL_AXIS_RULES, parse_config_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_config_arg(arg, known=("task", "size", "runlocal"))
    config = ml_collections.ConfigDict()
    config.init = ""  # the pretrained checkpoint (HF folder, bertjax checkpoint or run directory)

    config.model = model = ml_collections.ConfigDict()
    model.size = args.get("size", "base")  # used only without init: a random BERT of this size
    model.vocab_size = 30522  # used only without init
    model.hidden_dropout_prob = 0.1  # dropout, also on the pooled output before the classifier
    model.attention_probs_dropout_prob = 0.1
    model.dtype = "float32"  # compute dtype: float32 or bfloat16
    model.param_dtype = "float32"
    model.remat = "none"  # "full" or "dots": recompute layer activations in the backward pass
    model.scan_layers = False  # True: the layers as one scan (compiled once; same checkpoints)
    model.attention = "einsum"  # or "cudnn" / "xla" (jax.nn.dot_product_attention; no attention dropout)

    config.task = task = ml_collections.ConfigDict()
    task.name = args.get("task", "mrpc")  # the GLUE task
    task.glue_dir = ""  # GLUE TSV directory (CoLA/, SST-2/, ..., diagnostic/); empty = TFDS glue/*
    task.tfds_data_dir = ""  # where TFDS keeps (or finds) prepared data; empty = its default
    task.max_seq_length = 128
    task.pad_to_multiple_of = 32  # cut each batch to its longest row, rounded up to this; 0 = no cut
    task.length_buckets = 0  # > 0: at most this many widths, fitted to the run's batches (a compile each)
    task.packing = False  # token classification (ner): a batch's examples packed into shared rows
    task.vocab_file = ""  # empty = the checkpoint's vocab.txt or tokenizer.json
    task.lowercase = True  # with vocab_file only; a checkpoint's vocab keeps its own casing

    config.optim = optim = ml_collections.ConfigDict()
    optim.optimizer = "adamw"
    optim.learning_rate = 2e-5  # peak; the paper's grid: 5e-5, 4e-5, 3e-5, 2e-5
    optim.b1 = 0.9
    optim.b2 = 0.999
    optim.eps = 1e-6
    optim.bias_correction = True  # Adam's; False: google-research/bert's optimizer, which has none
    optim.weight_decay = 0.01  # not on biases and LayerNorm
    optim.exclude_from_weight_decay = ["bias", "scale"]  # no decay (nor LAMB trust ratio) on these
    optim.schedule = "linear"  # linear decay to 0 after warmup
    optim.decay_power = 1.0  # power of the "polynomial" schedule (LAMB recipes use 0.5)
    optim.warmup_steps = 0
    optim.warmup_fraction = 0.1  # warm up over the first 10% of the steps
    optim.final_learning_rate_fraction = 0.0  # where the decay ends, as a fraction of the peak
    optim.clip_norm = 1.0
    optim.grad_accum_steps = 1

    config.train = train = ml_collections.ConfigDict()
    train.batch_size = 32  # the paper's grid: 16, 32
    train.num_epochs = 3.0  # the paper's grid: 2, 3, 4
    train.eval_batch_size = 64
    train.log_every_steps = 50
    train.checkpoint_every_steps = 1000  # and at every epoch end and on SIGTERM/SIGINT; 0 = not between epochs
    train.keep_checkpoint = False  # delete checkpoints/ once results.json is written (best/ stays)
    train.seed = 0  # classifier init, dropout and example order
    train.nonfinite = "stop"  # a NaN/Inf loss or gradient: "stop" with an error, or "skip" the update
    train.group_by_length = False  # batches of rows of similar length: less padding (see task.pad_to_multiple_of)

    config.mesh = mesh = ml_collections.ConfigDict()
    mesh.preset = ""  # "dp", "fsdp" or "fsdp_tp" set the sizes below; "" = use them as given
    mesh.data = -1  # -1 = the devices left over
    mesh.fsdp = 1  # FSDP: parameters, gradients and optimizer state split over these devices
    mesh.tensor = 1  # tensor parallelism: attention heads, MLP and vocab split over these devices
    mesh.logical_axis_rules = [list(r) for r in DEFAULT_LOGICAL_AXIS_RULES]

    config.distributed = distributed = ml_collections.ConfigDict()
    distributed.mode = "auto"  # "auto": TPU pods, SLURM, MPI, JAX_COORDINATOR_ADDRESS; "explicit"; "off"
    distributed.coordinator_address = ""  # explicit: host:port of process 0 (bound on that address only)
    distributed.num_processes = 0  # explicit: how many processes
    distributed.process_id = -1  # explicit: this process's index
    distributed.timeout_seconds = 300

    if "runlocal" in args:
        model.size = args.get("size", "tiny")
        task.max_seq_length = 64
        train.batch_size = 8
        train.eval_batch_size = 16
        train.num_epochs = 1.0
        train.log_every_steps = 5
    return config


def sweep(add: Callable[..., None]) -> None:
    """The BERT paper's fine-tuning grid (appendix A.3), three seeds each."""
    for learning_rate in (5e-5, 4e-5, 3e-5, 2e-5):
        for batch_size in (16, 32):
            for epochs in (2, 3, 4):
                for seed in (0, 1, 2):
                    add(
                        **{
                            "optim.learning_rate": learning_rate,
                            "train.batch_size": batch_size,
                            "train.num_epochs": epochs,
                            "train.seed": seed,
                        }
                    )
