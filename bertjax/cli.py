"""Shared plumbing of the entry points: absl flags, and bad input as a one-line error, exit 2."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn

from absl import app, flags, logging

from bertjax.errors import BertjaxError, TrainingStopped

EXIT_BAD_INPUT = 2
EXIT_STOPPED = 1  # training could not go on (e.g. a non-finite loss); what was saved is kept


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except Exception as e:  # flag, config-file and override errors all end here
        cause = e.__cause__ or e.__context__
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if cause is not None and str(cause).strip() and str(cause).splitlines()[0] not in message:
            message = f"{message}: {str(cause).strip().splitlines()[0]}"
        if isinstance(e, (AttributeError, KeyError)):  # ml_collections: an override of a key the config lacks
            missing = str(e).strip("\"' ")
            for arg in argv:
                name = arg.removeprefix("--").split("=")[0]
                if name.startswith("config.") and name.split(".")[-1] == missing:
                    message = f"unknown config key {name.removeprefix('config.')}"
        fail(message)


def run(main: Callable[[list[str]], Any]) -> None:
    """`absl.app.run(main)`, with BertjaxError and flag errors as one line on stderr and exit 2."""

    def guarded(argv: list[str]) -> Any:
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
        try:
            return main(argv)
        except BertjaxError as e:
            fail(str(e))
        except TrainingStopped as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(EXIT_STOPPED)

    app.run(guarded, flags_parser=_parse_flags)
