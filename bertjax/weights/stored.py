"""Parts of saved orbax items read without the rest: a saved tree's shapes and dtypes, and chosen
subtrees (a run's parameters without its optimizer state, or the reverse). Model checkpoints and
run checkpoints both read through these. orbax is imported only where a checkpoint is read."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def saved_tree(directory: str | Path) -> Any:
    """The tree metadata (names, shapes, dtypes) of a saved item, e.g. `checkpoints/<step>/state`."""
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as checkpointer:
        saved = checkpointer.metadata(Path(directory).absolute())
    return getattr(getattr(saved, "item_metadata", saved), "tree", saved)


def restore_subtrees(directory: str | Path, target: dict[str, Any]) -> dict[str, Any]:
    """Only the top-level subtrees of a saved item that `target` names (e.g. {"params": ...}), read
    into the target's dtypes and shardings (jax.ShapeDtypeStruct leaves) or onto the host (numpy
    leaves); the item's other subtrees are not read."""
    import orbax.checkpoint as ocp

    restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    args = ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True)
    with ocp.PyTreeCheckpointer() as checkpointer:
        return checkpointer.restore(Path(directory).absolute(), args=args)
