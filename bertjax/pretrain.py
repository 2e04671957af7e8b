"""Pretrain BERT (masked LM + next sentence prediction).

    python -m bertjax.pretrain --config=configs/pretrain.py:size=mini --workdir=runs/mini \
        [--config.train.num_train_steps=1000 ...]
"""

from absl import flags
from ml_collections import config_flags

from bertjax import cli
from bertjax import config as config_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Pretraining config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, logs, plot.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    del argv
    # Imported here, after cli.run has re-executed the process (huge pages): jax and the model
    # libraries take over a second to import, which the first process need not spend.
    from bertjax.parallel import distributed
    from bertjax.training import pretraining

    config = config_lib.from_config_dict(cli.config_value(_CONFIG))
    distributed.initialize(config.distributed)  # before anything else touches JAX
    metrics = pretraining.pretrain(config, _WORKDIR.value)
    pretraining.print_summary(metrics, _WORKDIR.value)


def run() -> None:
    """The console script's entry point (`pip install` puts it on the PATH)."""
    cli.run(main)


if __name__ == "__main__":
    run()
