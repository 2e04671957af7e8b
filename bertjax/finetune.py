"""Fine-tune BERT on a GLUE task or any labelled text set; predict its test split.

python -m bertjax.finetune --config=configs/glue.py:task=mrpc --config.init=CKPT --workdir=runs/mrpc
python -m bertjax.finetune --config=configs/textclf.py --config.task.train_file=train.tsv ... --workdir=DIR
"""

from absl import flags
from ml_collections import config_flags

from bertjax import cli
from bertjax import config as config_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Fine-tuning config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: best checkpoint, logs, predictions.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    del argv
    # Imported here, after cli.run has re-executed the process (huge pages): jax and the model
    # libraries take over a second to import, which the first process need not spend.
    from bertjax.parallel import distributed
    from bertjax.training import finetuning

    config = config_lib.finetune_config_from_dict(cli.config_value(_CONFIG))
    distributed.initialize(config.distributed)  # before anything else touches JAX
    results = finetuning.finetune(config, _WORKDIR.value)
    finetuning.print_summary(results, _WORKDIR.value)


def run() -> None:
    """The console script's entry point (`pip install` puts it on the PATH)."""
    cli.run(main)


if __name__ == "__main__":
    run()
