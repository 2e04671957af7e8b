"""Checkpoints with orbax: the train state plus the data position, keep-K, resume from latest.

A checkpoint holds the whole TrainState (params, optimizer state, step), a small JSON record of
progress (pretraining: step, examples consumed; fine-tuning: step, epoch records, best epoch)
and any further named trees (fine-tuning: the best epoch's parameters). Restoring reads straight
into the sharded abstract state; a checkpoint whose parameter shapes differ from the model being
trained is a `CheckpointError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import optax
import orbax.checkpoint as ocp
from flax import traverse_util

from bertjax.errors import CheckpointError
from bertjax.weights.param_tree import STACKED_PREFIX
from bertjax.weights.stored import restore_subtrees, saved_tree


def manager(directory: str | Path, keep: int, trees: tuple[str, ...] = ()) -> ocp.CheckpointManager:
    """A manager of checkpoints with the items state, progress and the named `trees`."""
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=True)
    handlers = {"state": ocp.StandardCheckpointHandler(), "progress": ocp.JsonCheckpointHandler()}
    handlers |= {name: ocp.StandardCheckpointHandler() for name in trees}
    return ocp.CheckpointManager(Path(directory).absolute(), options=options, item_handlers=handlers)


def save(mngr: ocp.CheckpointManager, step: int, state: Any, progress: dict[str, Any], **trees: Any) -> None:
    items = {"state": ocp.args.StandardSave(state), "progress": ocp.args.JsonSave(progress)}
    items |= {name: ocp.args.StandardSave(tree) for name, tree in trees.items()}
    mngr.save(step, args=ocp.args.Composite(**items), force=True)


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    if not isinstance(tree, dict):
        tree = {"params": tree}
    flat = traverse_util.flatten_dict(tree)
    return {"/".join(str(k) for k in key): tuple(getattr(v, "shape", ())) for key, v in flat.items()}


def check_compatible(mngr: ocp.CheckpointManager, step: int, params: Any) -> None:
    """Raises CheckpointError if the saved parameters' names or shapes differ from `params`."""
    metadata = mngr.item_metadata(step)["state"]
    saved = metadata["params"]
    saved_shapes, our_shapes = _shapes(dict(saved)), _shapes(dict(params))
    where = f"checkpoint {Path(str(mngr.directory)) / str(step)}"
    saved_scanned, our_scanned = (any(n.startswith(STACKED_PREFIX) for n in s) for s in (saved_shapes, our_shapes))
    if saved_scanned != our_scanned:
        raise CheckpointError(
            f"{where} was saved with model.scan_layers={saved_scanned}: resume with that setting (through "
            "init, its weights load either way)"
        )
    for name, shape in our_shapes.items():
        if name not in saved_shapes:
            raise CheckpointError(f"{where} is of another model: it has no parameter {name}")
        if saved_shapes[name] != shape:
            raise CheckpointError(
                f"{where} is of another model shape: {name} is {saved_shapes[name]} there, {shape} in this config"
            )
    extra = sorted(set(saved_shapes) - set(our_shapes))
    if extra:
        raise CheckpointError(f"{where} is of another model: it has parameter {extra[0]} that this config lacks")


def _abstract(tree: Any) -> Any:
    """The restore target of a tree of device arrays: their shapes, dtypes and shardings."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def restore_latest(mngr: ocp.CheckpointManager, state: Any, **trees: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(state, progress, {name: tree}) from the latest checkpoint, or (state, {}, trees) when there is none.

    `state` and the named `trees` supply the target structures, dtypes and shardings.
    """
    step = mngr.latest_step()
    if step is None:
        return state, {}, trees
    check_compatible(mngr, step, state.params)
    items = {"state": ocp.args.StandardRestore(_abstract(state)), "progress": ocp.args.JsonRestore()}
    items |= {name: ocp.args.StandardRestore(_abstract(tree)) for name, tree in trees.items()}
    restored = mngr.restore(step, args=ocp.args.Composite(**items))
    return restored["state"], dict(restored["progress"]), {name: restored[name] for name in trees}


def restore_run_state(step_dir: str | Path, state: Any, restart_count: bool = False) -> Any:
    """The optimizer state of another run's checkpoint (`checkpoints/<step>`) read into the
    structure and shardings of `state`, whose parameters, step and learning-rate schedule count are
    kept: a second phase (its parameters already taken from that checkpoint) that continues the
    first's moments. With `restart_count` the moments' count (Adam's bias correction) starts again
    at 0, as NVIDIA's BERT phase 2 does. Only the optimizer state is read. A checkpoint of another
    optimizer is a `CheckpointError`."""
    step_dir = Path(step_dir).absolute()
    where = f"checkpoint {step_dir}"
    saved = saved_tree(step_dir / "state")
    saved_shapes = sorted(tuple(x.shape) for x in jax.tree.leaves(saved["opt_state"]))
    our_shapes = sorted(tuple(x.shape) for x in jax.tree.leaves(state.opt_state))
    if saved_shapes != our_shapes:
        raise CheckpointError(
            f"{where} holds another optimizer's state ({len(saved_shapes)} arrays; this config's has "
            f"{len(our_shapes)}): use its optim.optimizer and optim.clip_norm, or init_optimizer=False"
        )
    try:
        restored = restore_subtrees(step_dir / "state", {"opt_state": _abstract(state.opt_state)})
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(
            f"{where} holds an optimizer state of another structure than this config's: use its "
            "optim.optimizer and optim.clip_norm, or init_optimizer=False"
        ) from None
    # The moments and their bias-correction count go on; the learning-rate schedule's count is
    # this run's (its step 0: the schedule starts afresh, or at optim.schedule_offset).
    opt_state = jax.tree.map(
        lambda ours, saved: ours if isinstance(ours, optax.ScaleByScheduleState) else saved,
        state.opt_state,
        restored["opt_state"],
        is_leaf=lambda x: isinstance(x, optax.ScaleByScheduleState),
    )
    if restart_count:
        opt_state = jax.tree.map(
            lambda x: x._replace(count=x.count * 0) if isinstance(x, optax.ScaleByAdamState) else x,
            opt_state,
            is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState),
        )
    return state.replace(opt_state=opt_state)
