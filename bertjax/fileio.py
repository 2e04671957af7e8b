"""Files and folders written whole or not at all: a temporary name in the same folder, then an
atomic rename; folders that a failed step created are removed again."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def missing_or_not_a_file(path: Path) -> str:
    """Why `path` cannot be read as a file ("does not exist", "is a folder"), or "" if it can."""
    if path.is_file():
        return ""
    return "is a folder, not a file" if path.is_dir() else "does not exist"


def check_writable_folder(path: str | Path, what: str) -> None:
    """A folder to write into: it need not exist yet, but it and its parents must not be files."""
    from bertjax.errors import ConfigError

    path = Path(path)
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                where = "" if folder == path else f" ({folder} is a file)"
                raise ConfigError(f"{what} {path} is not a folder{where}")
            return


def check_writable_file(path: str | Path, what: str) -> None:
    """A file to write: not a folder, and its folder can be made."""
    from bertjax.errors import ConfigError

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder, not a file")
    check_writable_folder(path.parent, f"{what} {path}: the folder")


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Writes `text` (UTF-8, "\\n" newlines) to `path`; a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with temporary.open("w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def folders_removed_on_failure(directory: str | Path) -> Iterator[None]:
    """On an exception, `directory` and those of its parents that did not exist before are removed
    again where they are empty (deepest first): a failed step leaves no empty folders behind. A
    folder that existed before, or holds anything, is never touched."""
    directory = Path(directory)
    created = [d for d in (directory, *directory.parents) if not d.exists()]
    try:
        yield
    except BaseException:
        for d in created:
            if d.is_dir() and not any(d.iterdir()):
                with contextlib.suppress(OSError):  # another process may have removed it first
                    d.rmdir()
        raise


@contextlib.contextmanager
def folder_written_whole(final: str | Path, marker: str) -> Iterator[Path]:
    """Yields a temporary folder beside `final` to fill; when the block succeeds it is renamed to
    `final`, so a reader never sees a half-written folder. If another process got there first
    (`final/marker` exists) its folder stands. The temporary folder never stays behind."""
    final = Path(final)
    temporary = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    try:
        yield temporary
        try:
            temporary.rename(final)
        except OSError:
            if not (final / marker).is_file():  # not another process that finished first
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


@contextlib.contextmanager
def run_directory(workdir: str | Path) -> Iterator[None]:
    """A run's directory that a failure before its first checkpoint leaves as it was.

    On bad input (`BertjaxError`, e.g. a mesh that does not fit the devices, found after the run
    wrote its config or prepared its data) everything the run added to `workdir` is removed again,
    and `workdir` itself if the run created it, as long as no checkpoint was committed; entries
    that were there before are never touched. On any other failure only the empty folders the
    run created go (`folders_removed_on_failure`), so what a stopped run saved is kept.
    """
    from bertjax.errors import BertjaxError

    workdir = Path(workdir)
    existed = workdir.exists()
    before = {p.name for p in workdir.iterdir()} if workdir.is_dir() else set()
    checkpoints = workdir / "checkpoints"
    try:
        with folders_removed_on_failure(checkpoints):
            yield
    except BertjaxError:
        committed = checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())
        if workdir.is_dir() and not committed:
            if not existed:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                for entry in workdir.iterdir():
                    if entry.name not in before:
                        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        raise
