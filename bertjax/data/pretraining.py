"""Pretraining examples (masked LM + next sentence prediction) the google-research/bert way.

Two stages, so that training never re-tokenizes:

1. `prepare` reads the corpus once (text files or TFDS), tokenizes every sentence (WordPiece or BPE),
   holds out documents for evaluation, and pairs segments as `create_pretraining_data.py` does:
   a chunk of whole sentences filling `max_seq_length - 3` tokens (`short_seq_prob` of the
   chunks aim at a shorter random length), split into A and B; B is the true continuation, or
   with `random_next_prob` (and always for a one-sentence chunk) a run of sentences from another
   document, the unused sentences going back to the pool; the pair is truncated to fit, one token
   at a time from the front or back of the longer segment. For ALBERT's sentence-order task
   (`pair_task="sop"`) B always continues A and the pair is swapped with `random_next_prob`
   (label 1). `dupe_factor` copies are paired with
   different keys (side by side in `data.prepare_processes` processes). The result lives in
   `<cache_dir>/<fingerprint>/`:

       {train,eval}_tokens.npy      the token stream of the split (uint16 when the vocab fits)
       {train,eval}_instances.npy   one row per pair: a_start, a_end, b_start, b_end, is_random_next
       train_token_counts.npy       unigram counts of the training tokens
       meta.json                    what was prepared; written last

   The directory is built under a temporary name and renamed into place when complete, so a
   failed preparation leaves nothing behind and a prepared directory is always whole. The
   fingerprint covers everything that decides its content (files, vocab, pairing settings,
   seed), so a change of any of them prepares anew.

   With `example_format="documents"` (masked LM alone: RoBERTa, ModernBERT) an instance is instead
   a run of whole sentences of one document filling `max_seq_length - 2` tokens, in order, with
   an empty B: every token of the split is in exactly one instance per copy.

2. `PretrainingExamples.example(index, epoch)` builds `[CLS] A [SEP] B [SEP]` (or `[CLS] A [SEP]`) with token types and
   masks it at read time with a key made of (seed, epoch, index): `masked_lm_prob` of the tokens
   (at most `max_predictions_per_seq`, never [CLS]/[SEP]/[PAD]), 80% replaced by [MASK], 10% by a
   random token, 10% kept (`mask_token_prob`, `random_token_prob`: ELECTRA's 85% / 0%); optionally whole words. Static masking uses epoch 0 for every epoch
   (google-research/bert's fixed masks, one set per dupe copy); dynamic masking draws new masks
   each epoch. The draws are counter-based hashes (splitmix64) of that key and the token's
   position, so `rows_batch` builds a whole batch with array operations (about 110,000 examples/s
   on one core at length 128) and every row is the same whichever batch or host builds it.
   `batch(step, ...)` takes the rows of one global batch that belong to this host from an epoch
   order keyed by (seed, epoch); `batch_iterator` builds them ahead on grain threads or processes.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import itertools
import json
import multiprocessing
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers
from absl import flags, logging

from bertjax import fileio
from bertjax.config import DataConfig, TrainConfig
from bertjax.data import corpus
from bertjax.data.tokenizer import special_ids, subword_flags
from bertjax.errors import DataError

FORMAT_VERSION = 1
SPLITS = ("train", "eval")
_ENCODE_BATCH = 4096  # sentences per call into the (multithreaded) Rust tokenizer

# Stream tags, so the pairing, masking and ordering keys never collide.
_PAIRING, _MASKING, _ORDER, _HOLDOUT = 1, 2, 3, 4

Example = dict[str, np.ndarray]


# --------------------------------------------------------------------------------------------
# Stage 1: tokenize and pair, once.


class TokenizedDocuments:
    """A split's documents as one token stream: sentence s is tokens[sent_start[s]:sent_end[s]],
    document d is sentences doc_start[d]:doc_end[d]."""

    def __init__(self, tokens: np.ndarray, sentence_bounds: np.ndarray, document_bounds: np.ndarray) -> None:
        self.tokens = tokens
        self.sentence_bounds = sentence_bounds  # [num_sentences, 2] token offsets
        self.document_bounds = document_bounds  # [num_documents, 2] sentence offsets

    def __len__(self) -> int:
        return len(self.document_bounds)

    def sentence_lengths(self, document: int) -> np.ndarray:
        first, last = self.document_bounds[document]
        bounds = self.sentence_bounds[first:last]
        return bounds[:, 1] - bounds[:, 0]


class DocumentTokenizer:
    """Tokenizes documents as they come (no special tokens; empty sentences and documents dropped)
    into one token stream, `add` by `add`, holding only the tokens and the bounds: a batch of
    sentences goes into the (multithreaded) Rust tokenizer at a time and leaves one array of
    `dtype` tokens, so a corpus is never held as text."""

    def __init__(self, tokenizer: tokenizers.Tokenizer, dtype: Any = np.int32) -> None:
        self.tokenizer = tokenizer
        self.dtype = np.dtype(dtype)
        self.token_chunks: list[np.ndarray] = []
        self.length_chunks: list[np.ndarray] = []  # tokens per kept sentence
        self.size_chunks: list[np.ndarray] = []  # kept sentences per kept document
        self.pending: list[str] = []
        self.pending_docs: list[int] = []

    def add(self, document: corpus.Document) -> None:
        self.pending.extend(document)
        self.pending_docs.append(len(document))
        if len(self.pending) >= _ENCODE_BATCH:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        encodings = self.tokenizer.encode_batch(self.pending, add_special_tokens=False)
        lengths = np.fromiter((len(e) for e in encodings), np.int64, len(encodings))
        kept = lengths > 0
        ids = itertools.chain.from_iterable(e.ids for e in encodings)
        self.token_chunks.append(np.fromiter(ids, self.dtype, int(lengths.sum())))
        self.length_chunks.append(lengths[kept])
        kept_before = np.concatenate([[0], np.cumsum(kept, dtype=np.int64)])
        offsets = np.cumsum([0, *self.pending_docs], dtype=np.int64)
        sizes = kept_before[offsets[1:]] - kept_before[offsets[:-1]]  # kept sentences of each document
        self.size_chunks.append(sizes[sizes > 0])
        self.pending.clear()
        self.pending_docs.clear()

    def finish(self, path: Path | None = None) -> TokenizedDocuments:
        """The documents added; with `path`, the tokens are written there as an .npy file, chunk by
        chunk, and come back memory-mapped (never all in memory twice)."""
        self._flush()
        count = sum(len(chunk) for chunk in self.token_chunks)
        if path is None:
            tokens = np.concatenate(self.token_chunks) if self.token_chunks else np.zeros(0, self.dtype)
        else:
            tokens = np.lib.format.open_memmap(path, mode="w+", dtype=self.dtype, shape=(count,))
            offset = 0
            for chunk in self.token_chunks:
                tokens[offset : offset + len(chunk)] = chunk
                offset += len(chunk)
            tokens.flush()
        self.token_chunks.clear()
        lengths = np.concatenate(self.length_chunks) if self.length_chunks else np.zeros(0, np.int64)
        sizes = np.concatenate(self.size_chunks) if self.size_chunks else np.zeros(0, np.int64)
        ends = np.cumsum(lengths, dtype=np.int64)
        sentence_bounds = np.stack([ends - lengths, ends], axis=1).reshape(-1, 2)
        doc_ends = np.cumsum(sizes, dtype=np.int64)
        document_bounds = np.stack([doc_ends - sizes, doc_ends], axis=1).reshape(-1, 2)
        return TokenizedDocuments(tokens, sentence_bounds, document_bounds)


def tokenize_documents(
    documents: Iterable[corpus.Document], tokenizer: tokenizers.Tokenizer, dtype: Any = np.int32
) -> TokenizedDocuments:
    """Tokenizes every sentence (no special tokens); empty sentences and documents are dropped."""
    tokenizing = DocumentTokenizer(tokenizer, dtype)
    for document in documents:
        tokenizing.add(document)
    return tokenizing.finish()


def _truncate_pair(spans: list[int], max_num_tokens: int, rng: np.random.Generator) -> None:
    """google-research/bert's truncate_seq_pair on [a_start, a_end, b_start, b_end], in place."""
    while (spans[1] - spans[0]) + (spans[3] - spans[2]) > max_num_tokens:
        first = 0 if spans[1] - spans[0] > spans[3] - spans[2] else 2
        if rng.random() < 0.5:
            spans[first] += 1  # drop from the front
        else:
            spans[first + 1] -= 1  # drop from the back


def _instances_of_document(
    docs: TokenizedDocuments, index: int, config: DataConfig, rng: np.random.Generator
) -> list[tuple[int, int, int, int, int]]:
    """The segment pairs of one document (create_instances_from_document in google-research/bert;
    with `pair_task="sop"`, ALBERT's: B always continues A, swapped with `random_next_prob`, and a
    one-sentence chunk, which has no continuation, makes no pair)."""
    max_num_tokens = config.max_seq_length - 3
    first_sentence = int(docs.document_bounds[index, 0])
    lengths = docs.sentence_lengths(index)
    bounds = docs.sentence_bounds
    instances = []

    def target_length() -> int:
        if rng.random() < config.short_seq_prob:
            return int(rng.integers(2, max_num_tokens + 1))
        return max_num_tokens

    target = target_length()
    chunk_start, chunk_tokens, i = 0, 0, 0
    while i < len(lengths):
        chunk_tokens += int(lengths[i])
        if i == len(lengths) - 1 or chunk_tokens >= target:
            chunk = range(chunk_start, i + 1)
            a_sentences = 1 if len(chunk) < 2 else int(rng.integers(1, len(chunk)))
            a_last = chunk_start + a_sentences - 1
            a_span = (bounds[first_sentence + chunk_start, 0], bounds[first_sentence + a_last, 1])
            a_length = a_span[1] - a_span[0]
            sop = config.pair_task == "sop"
            is_random_next = not sop and (len(chunk) == 1 or rng.random() < config.random_next_prob)
            if is_random_next and len(docs) > 1:
                target_b = target - a_length
                other = index
                for _ in range(10):
                    other = int(rng.integers(0, len(docs)))
                    if other != index:
                        break
                other_first = int(docs.document_bounds[other, 0])
                other_lengths = docs.sentence_lengths(other)
                start = int(rng.integers(0, len(other_lengths)))
                stop, b_tokens = start, 0
                while stop < len(other_lengths):
                    b_tokens += int(other_lengths[stop])
                    stop += 1
                    if b_tokens >= target_b:
                        break
                b_span = (bounds[other_first + start, 0], bounds[other_first + stop - 1, 1])
                i = a_last  # the sentences after A were not used: they start the next chunk
            elif len(chunk) > 1:
                is_random_next = False
                b_span = (bounds[first_sentence + a_last + 1, 0], bounds[first_sentence + i, 1])
            else:
                # A one-sentence chunk in a one-document corpus (or for SOP): there is no other
                # document to draw B from, and no continuation either.
                chunk_start, chunk_tokens, i = i + 1, 0, i + 1
                target = target_length()
                continue
            spans = [int(a_span[0]), int(a_span[1]), int(b_span[0]), int(b_span[1])]
            _truncate_pair(spans, max_num_tokens, rng)
            if sop and rng.random() < config.random_next_prob:  # sentence order: B then A
                spans, is_random_next = spans[2:] + spans[:2], True
            if spans[1] > spans[0] and spans[3] > spans[2]:
                instances.append((*spans, int(is_random_next)))
            chunk_start, chunk_tokens = i + 1, 0
            target = target_length()
        i += 1
    return instances


def _runs_of_document(docs: TokenizedDocuments, index: int, config: DataConfig) -> list[tuple[int, int, int, int, int]]:
    """The examples of one document for `example_format="documents"`: runs of whole sentences
    filling `max_seq_length - 2` tokens, in order (a sentence longer than that is cut into pieces
    of that length), each as an instance with an empty B segment."""
    max_num_tokens = config.max_seq_length - 2
    first, last = (int(b) for b in docs.document_bounds[index])
    instances = []
    start = end = int(docs.sentence_bounds[first, 0])
    for sentence_start, sentence_end in docs.sentence_bounds[first:last].tolist():
        if sentence_end - start > max_num_tokens and end > start:  # the sentence starts the next run
            instances.append((start, end, end, end, 0))
            start = sentence_start
        while sentence_end - start > max_num_tokens:  # one sentence longer than a row
            instances.append((start, start + max_num_tokens, start + max_num_tokens, start + max_num_tokens, 0))
            start += max_num_tokens
        end = sentence_end
    if end > start:
        instances.append((start, end, end, end, 0))
    return instances


def _instances_of_copy(docs: TokenizedDocuments, config: DataConfig, split_key: int, dupe: int) -> np.ndarray:
    """The segment pairs (or document runs) of one of the `dupe_factor` copies: [N, 5] int64."""
    rng = np.random.default_rng([config.seed, _PAIRING, split_key, dupe])
    chunks, rows = [], []  # rows as compact arrays every 4,096 pairs, not as Python tuples
    for index in range(len(docs)):
        if config.example_format == "documents":
            rows.extend(_runs_of_document(docs, index, config))
        else:
            rows.extend(_instances_of_document(docs, index, config, rng))
        if len(rows) >= 4096:
            chunks.append(np.asarray(rows, np.int64).reshape(-1, 5))
            rows.clear()
    chunks.append(np.asarray(rows, np.int64).reshape(-1, 5))
    return np.concatenate(chunks)


_AUTO_PARALLEL_TOKENS = 50_000_000  # tokens x copies from which prepare_processes=0 pairs in processes


def pairing_processes(docs: TokenizedDocuments, config: DataConfig) -> int:
    """How many processes pair a split's copies (`DataConfig.prepare_processes`)."""
    if config.prepare_processes:
        return min(config.prepare_processes, config.dupe_factor)
    if len(docs.tokens) * config.dupe_factor < _AUTO_PARALLEL_TOKENS:
        return 1
    return max(1, min(os.cpu_count() or 1, config.dupe_factor))


def _instances_of_copy_on_disk(bounds: tuple[Path, Path], config: DataConfig, split_key: int, dupe: int) -> np.ndarray:
    """`_instances_of_copy` in a pairing process, on the split's bounds memory-mapped from disk
    (one copy in the page cache for all the processes, not one pickled copy each)."""
    sentence_bounds, document_bounds = (np.asarray(np.load(path, mmap_mode="r")) for path in bounds)
    docs = TokenizedDocuments(np.zeros(0, np.int32), sentence_bounds, document_bounds)
    return _instances_of_copy(docs, config, split_key, dupe)


def create_instances(
    docs: TokenizedDocuments, config: DataConfig, split_key: int, scratch: Path | None = None
) -> np.ndarray:
    """All segment pairs of a split, `dupe_factor` times with different pairing keys: [N, 5] int64.

    Each copy has its own key, so the copies are paired side by side in `pairing_processes`
    processes (spawned: the parent may hold JAX) with the same result as one after another; they
    read the split's bounds from files in a temporary folder under `scratch` (default: the
    system's temporary folder).
    """
    copies = range(config.dupe_factor)
    processes = pairing_processes(docs, config)
    if processes <= 1:
        return np.concatenate([_instances_of_copy(docs, config, split_key, dupe) for dupe in copies])
    with tempfile.TemporaryDirectory(dir=scratch) as directory:
        bounds = (Path(directory) / "sentence_bounds.npy", Path(directory) / "document_bounds.npy")
        np.save(bounds[0], docs.sentence_bounds)
        np.save(bounds[1], docs.document_bounds)
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context) as pool:
            tasks = [(bounds, config, split_key, dupe) for dupe in copies]
            return np.concatenate(list(pool.map(_instances_of_copy_on_disk, *zip(*tasks))))


def _file_identity(pattern_list: tuple[str, ...]) -> list[tuple[str, int, int]]:
    return [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in corpus.expand_files(pattern_list)]


def fingerprint(config: DataConfig, tokenizer: tokenizers.Tokenizer) -> str:
    """A hash of everything that decides the prepared data (not the read-time masking settings)."""
    identity = {
        "format": FORMAT_VERSION,
        "train_files": _file_identity(config.train_files) if config.train_files else [],
        "eval_files": _file_identity(config.eval_files) if config.eval_files else [],
        "tfds": [config.tfds_name, config.tfds_split, config.tfds_eval_split, config.tfds_text_feature]
        if not config.train_files
        else [],
        "tfds_data_dir": config.tfds_data_dir if not config.train_files else "",
        "corpus_format": config.corpus_format,
        "eval_fraction": config.eval_fraction,
        "max_documents": config.max_documents,
        "tokenizer": hashlib.sha256(tokenizer.to_str().encode()).hexdigest(),  # vocab and normalisation
        "max_seq_length": config.max_seq_length,
        "example_format": config.example_format,
        "short_seq_prob": config.short_seq_prob,
        "random_next_prob": config.random_next_prob,
        **({"pair_task": config.pair_task} if config.pair_task != "nsp" else {}),
        "dupe_factor": config.dupe_factor,
        "seed": config.seed,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _limited(documents: Iterator[corpus.Document], limit: int) -> Iterator[corpus.Document]:
    for count, document in enumerate(documents):
        if limit and count >= limit:
            return
        yield document


def documents_by_split(config: DataConfig) -> Iterator[tuple[str, corpus.Document]]:
    """("train" | "eval", document) for every document, read as a stream: eval from its own
    files/split, or a keyed random hold-out of the train documents. The hold-out needs the number
    of documents first, so then the corpus is read twice rather than held in memory."""
    if config.train_files:

        def train_source() -> Iterator[corpus.Document]:
            return _limited(corpus.read_text_files(config.train_files, config.corpus_format), config.max_documents)

        eval_source = corpus.read_text_files(config.eval_files, config.corpus_format) if config.eval_files else None
        where = f"corpus {','.join(config.train_files)}"
    else:
        read = functools.partial(
            corpus.read_tfds, config.tfds_name, text_feature=config.tfds_text_feature, data_dir=config.tfds_data_dir
        )

        def train_source() -> Iterator[corpus.Document]:
            return _limited(read(split=config.tfds_split), config.max_documents)

        eval_source = read(split=config.tfds_eval_split) if config.tfds_eval_split else None
        where = f"TFDS dataset {config.tfds_name} split {config.tfds_split}"
    if eval_source is not None:
        yield from (("train", document) for document in train_source())
        yield from (("eval", document) for document in eval_source)
        return
    count = sum(1 for _ in train_source())
    if count < 2:
        raise DataError(f"{where} has {count} document(s): too few to hold out evaluation documents")
    num_eval = min(count - 1, max(1, round(count * config.eval_fraction)))
    order = np.random.default_rng([config.seed, _HOLDOUT]).permutation(count)
    held_out = np.zeros(count, bool)
    held_out[order[:num_eval]] = True
    for index, document in enumerate(train_source()):
        yield ("eval" if held_out[index] else "train"), document


def _token_counts(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """np.bincount of the tokens, a slice at a time (bincount widens its input to int64)."""
    counts = np.zeros(vocab_size, np.int64)
    for start in range(0, len(tokens), 1 << 16):
        counts += np.bincount(tokens[start : start + (1 << 16)], minlength=vocab_size)
    return counts


def _token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


def prepare(config: DataConfig, tokenizer: tokenizers.Tokenizer, cache_dir: str | Path) -> Path:
    """The prepared directory for `config` under `cache_dir`, built now unless it already exists."""
    cache_dir = Path(cache_dir)
    final = cache_dir / fingerprint(config, tokenizer)
    if (final / "meta.json").is_file():
        return final
    start = time.perf_counter()
    # No empty folders behind a failed preparation, and never a half-written prepared folder.
    with fileio.folders_removed_on_failure(cache_dir), fileio.folder_written_whole(final, "meta.json") as temporary:
        vocab_size = tokenizer.get_vocab_size()
        tokenizing = {split: DocumentTokenizer(tokenizer, _token_dtype(vocab_size)) for split in SPLITS}
        for split, document in documents_by_split(config):
            tokenizing[split].add(document)
        meta: dict[str, Any] = {"format": FORMAT_VERSION, "fingerprint": final.name, "vocab_size": vocab_size}
        meta["splits"] = {}
        for key, split in enumerate(SPLITS):
            docs = tokenizing.pop(split).finish(temporary / f"{split}_tokens.npy")
            instances = create_instances(docs, config, key, scratch=temporary)
            np.save(temporary / f"{split}_instances.npy", instances)
            if split == "train":
                np.save(temporary / "train_token_counts.npy", _token_counts(docs.tokens, vocab_size))
            meta["splits"][split] = {
                "documents": len(docs),
                "sentences": len(docs.sentence_bounds),
                "tokens": len(docs.tokens),
                "instances": len(instances),
                "random_next": int(instances[:, 4].sum()),
            }
        (temporary / "meta.json").write_text(json.dumps(meta, indent=2))
        logging.info(
            "prepared %s: %d train tokens, %d pairs, in %.1f s",
            final,
            meta["splits"]["train"]["tokens"],
            meta["splits"]["train"]["instances"],
            time.perf_counter() - start,
        )
    return final


# --------------------------------------------------------------------------------------------
# Stage 2: examples masked at read time, batches, the loader.


def pack(lengths: np.ndarray, row_length: int, max_per_row: int) -> np.ndarray:
    """Best-fit-decreasing packing of items of `lengths` into rows of `row_length` tokens, at most
    `max_per_row` items per row. Returns [rows, max_per_row] item indices, -1 in empty slots.

    Items are placed longest first (ties by index, so the plan is deterministic), each into the
    open row with the least room that still fits it. Rows are kept in buckets by free room, so a
    placement costs at most `row_length` bucket checks.
    """
    order = np.argsort(-lengths, kind="stable")
    rows: list[list[int]] = []
    by_room: list[list[int]] = [[] for _ in range(row_length + 1)]  # open rows by free room
    room: list[int] = []
    for item in order.tolist():
        need = int(lengths[item])
        if need > row_length:
            raise ValueError(f"item {item} has {need} tokens, more than a row of {row_length}")
        row = next((by_room[r].pop() for r in range(need, row_length + 1) if by_room[r]), None)
        if row is None:
            row = len(rows)
            rows.append([])
            room.append(row_length)
        rows[row].append(item)
        room[row] -= need
        if len(rows[row]) < max_per_row and room[row] > 0:
            by_room[room[row]].append(row)
    plan = np.full((len(rows), max_per_row), -1, np.int64)
    for r, items in enumerate(rows):
        plan[r, : len(items)] = items
    return plan


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise on uint64 (a bijection with full avalanche)."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _pair_keys(seed: int, epochs: np.ndarray, instances: np.ndarray) -> np.ndarray:
    """One 64-bit masking key per pair, a hash of (seed, masking stream, epoch, instance)."""
    base = _mix64(np.asarray([seed % 2**64], np.uint64) ^ np.uint64(_MASKING << 32))
    keyed = _mix64(base ^ np.asarray(epochs, np.int64).astype(np.uint64))
    return _mix64(keyed ^ np.asarray(instances, np.int64).astype(np.uint64))


def _token_hashes(keys: np.ndarray, length: int) -> np.ndarray:
    """[3, pairs, length] independent 64-bit draws per token position: which positions to
    predict, the 80/10/10 choice, the random token (splitmix64 streams counted from each key)."""
    counters = np.arange(3 * length, dtype=np.uint64).reshape(3, 1, length) + np.uint64(1)
    with np.errstate(over="ignore"):
        return _mix64(keys[None, :, None] + counters * _GOLDEN)


def _unit_floats(bits: np.ndarray) -> np.ndarray:
    """Uniform floats in [0, 1) from the top 53 of 64 bits."""
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


def predictions_per_row(config: DataConfig) -> int:
    """The masked-LM slots of a row: max_predictions_per_seq, or for packed rows the most that up to
    pack_examples pairs can take. Each pair predicts at most max(1, round(len * p)) (capped)
    tokens, so a row of max_seq_length tokens at most ceil(p * max_seq_length) + one per pair."""
    if config.pack_examples == 1:
        return config.max_predictions_per_seq
    bound = int(np.ceil(config.max_masking_rate() * config.max_seq_length)) + config.pack_examples
    return min(config.pack_examples * config.max_predictions_per_seq, bound)


def span_lengths(uniform: np.ndarray, p: float, longest: int) -> np.ndarray:
    """Span lengths from uniform draws in [0, 1): the inverse CDF of a geometric distribution with
    parameter `p` truncated to 1..`longest`, P(l) proportional to p (1 - p)^(l - 1) (SpanBERT)."""
    lengths = 1 + np.floor(np.log1p(-uniform * (1 - (1 - p) ** longest)) / np.log1p(-p)).astype(np.int64)
    return np.minimum(lengths, longest)


class PretrainingExamples:
    """Random access to the masked rows of one prepared split (one pair per row, or packed)."""

    def __init__(self, prepared: Path, split: str, config: DataConfig, tokenizer: tokenizers.Tokenizer) -> None:
        self.tokens = np.load(prepared / f"{split}_tokens.npy", mmap_mode="r")
        self.instances = np.load(prepared / f"{split}_instances.npy")
        self.config = config
        self.special = special_ids(tokenizer)
        self.special_tokens = 2 if config.example_format == "documents" else 3  # [CLS] A [SEP] (B [SEP])
        self.is_subword = subword_flags(tokenizer)
        vocab_size = tokenizer.get_vocab_size()
        specials = [self.special.pad, self.special.unk, self.special.cls, self.special.sep, self.special.mask]
        specials += [i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special]  # e.g. <|endoftext|>
        self.random_tokens = np.setdiff1d(np.arange(vocab_size), specials).astype(np.int32)
        lengths = self.instances[:, 1] - self.instances[:, 0] + self.instances[:, 3] - self.instances[:, 2]
        lengths += self.special_tokens
        self.predictions_per_row = predictions_per_row(config)
        if config.pack_examples == 1:
            self.rows = np.arange(len(self.instances))[:, None]
        else:
            self.rows = pack(lengths, config.max_seq_length, config.pack_examples)
        self.fill = float(lengths.sum()) / (len(self.rows) * config.max_seq_length) if len(self.rows) else 0.0

    def __len__(self) -> int:
        """The number of rows (pairs, or packs of pairs) in one epoch."""
        return len(self.rows)

    def example(self, index: int, epoch: int = 0) -> Example:
        """Row `index` of epoch `epoch` as model inputs (one row of `rows_batch`)."""
        batch = self.rows_batch(np.asarray([index]), np.asarray([epoch]))
        return {key: value[0] for key, value in batch.items()}

    def rows_batch(self, indices: np.ndarray, epochs: np.ndarray, masked_lm_prob: float | None = None) -> Example:
        """Rows `indices` (of epochs `epochs`) as a batch: one masked pair per row, or with packing
        up to `pack_examples` pairs one after another; `masked_lm_prob` of each pair's tokens are
        masked (None: the config's).

        Each pair is `[CLS] A [SEP] B [SEP]`, masked with keys made of (seed, epoch or 0, instance),
        so a row is the same whichever batch or host builds it. A packed row's `attention_mask`
        is 1, 2, ... on the tokens of its first, second, ... pair (0 on padding), so the model
        keeps attention and positions within each pair; its masked-LM positions index the row,
        and it has one NSP slot per pair: `next_sentence_positions` (the pair's [CLS]), labels
        and weights. The whole batch is built with array operations over [pairs, length].
        """
        cfg = self.config
        special = self.special
        length = cfg.max_seq_length
        slots = self.rows[np.asarray(indices, np.int64)]  # [rows, pack_examples], -1 in empty slots
        num_rows = len(slots)
        row_of_pair, slot_of_pair = np.nonzero(slots >= 0)  # pairs in (row, slot) order
        instance = slots[row_of_pair, slot_of_pair]
        masking_epochs = np.asarray(epochs, np.int64)[row_of_pair] if cfg.masking == "dynamic" else 0 * instance
        a_start, a_end, b_start, b_end, is_random_next = self.instances[instance].T
        a_len, b_len = a_end - a_start, b_end - b_start
        pair_len = a_len + b_len + self.special_tokens
        first_of_row = np.searchsorted(row_of_pair, row_of_pair)  # each pair's row's first pair
        segment = np.arange(len(instance)) - first_of_row  # slot among the row's pairs
        previous = np.cumsum(pair_len) - pair_len  # tokens before each pair, over all rows
        offset = previous - previous[first_of_row]  # ... within its row

        # [pairs, length] views of every pair: t is the position within the pair.
        t = np.arange(length)[None, :]
        in_a = (t >= 1) & (t <= a_len[:, None])
        in_b = (t >= a_len[:, None] + 2) & (t < pair_len[:, None] - 1)  # empty for documents
        valid = t < pair_len[:, None]
        candidate = in_a | in_b  # never [CLS], [SEP] or padding
        source = np.where(in_a, a_start[:, None] + t - 1, b_start[:, None] + t - a_len[:, None] - 2)
        ids = np.where(candidate, self.tokens[np.where(candidate, source, 0)], special.sep).astype(np.int32)
        ids[:, 0] = special.cls

        hashes = _token_hashes(_pair_keys(cfg.seed, masking_epochs, instance), length)
        rate = cfg.masked_lm_prob if masked_lm_prob is None else masked_lm_prob
        to_predict = np.minimum(cfg.max_predictions_per_seq, np.maximum(1, np.round(pair_len * rate)))
        choice_keys = hashes[1]  # the 80/10/10 choice: per token, or per span
        if cfg.span_masking:
            chosen, choice_keys = self._spans(ids, candidate, hashes, to_predict.astype(np.int64))
        elif cfg.whole_word_masking:
            chosen = self._whole_words(ids, candidate, hashes[0], to_predict.astype(np.int64))
        else:  # the `to_predict` candidates with the smallest keys
            keys = np.where(candidate, hashes[0], np.iinfo(np.uint64).max)
            kth = np.take_along_axis(np.sort(keys, axis=1), (to_predict.astype(np.int64) - 1)[:, None], axis=1)
            chosen = candidate & (keys <= kth)
        labels = ids[chosen]
        draw = _unit_floats(choice_keys[chosen])
        # mask_token_prob (80%) [MASK], random_token_prob (10%) a random token, the rest keep theirs
        replacement = np.where(draw < self.config.mask_token_prob, special.mask, labels)
        random_rows = draw >= 1.0 - self.config.random_token_prob
        picks = hashes[2][chosen][random_rows] % np.uint64(len(self.random_tokens))
        replacement[random_rows] = self.random_tokens[picks.astype(np.int64)]
        masked_ids = ids.copy()
        masked_ids[chosen] = replacement

        # Into rows: pair p's token t goes to row row_of_pair[p], column offset[p] + t.
        pair_of_token, t_of_token = np.nonzero(valid)
        rows = row_of_pair[pair_of_token]
        columns = offset[pair_of_token] + t_of_token
        input_ids = np.full((num_rows, length), special.pad, np.int32)
        token_type_ids = np.zeros((num_rows, length), np.int32)
        attention_mask = np.zeros((num_rows, length), np.int32)
        input_ids[rows, columns] = masked_ids[valid]
        token_type_ids[rows, columns] = (t_of_token >= a_len[pair_of_token] + 2).astype(np.int32)
        attention_mask[rows, columns] = segment[pair_of_token] + 1

        predicted = chosen[valid]  # in (row, column) order
        predicted_rows = rows[predicted]
        prediction_slot = np.arange(len(predicted_rows)) - np.searchsorted(predicted_rows, predicted_rows)
        predictions = self.predictions_per_row
        masked_lm_positions = np.zeros((num_rows, predictions), np.int32)
        masked_lm_ids = np.zeros((num_rows, predictions), np.int32)
        masked_lm_weights = np.zeros((num_rows, predictions), np.float32)
        masked_lm_positions[predicted_rows, prediction_slot] = columns[predicted]
        masked_lm_ids[predicted_rows, prediction_slot] = labels  # ids[chosen]: the same (pair, position) order
        masked_lm_weights[predicted_rows, prediction_slot] = 1.0
        batch = {
            "input_ids": input_ids,
            "token_type_ids": token_type_ids,
            "attention_mask": attention_mask,
            "masked_lm_positions": masked_lm_positions,
            "masked_lm_ids": masked_lm_ids,
            "masked_lm_weights": masked_lm_weights,
        }
        if cfg.pack_examples == 1:
            return batch | {"next_sentence_labels": is_random_next.astype(np.int32)}
        shape = (num_rows, cfg.pack_examples)
        next_sentence_positions = np.zeros(shape, np.int32)
        next_sentence_labels = np.zeros(shape, np.int32)
        next_sentence_weights = np.zeros(shape, np.float32)
        next_sentence_positions[row_of_pair, segment] = offset
        next_sentence_labels[row_of_pair, segment] = is_random_next
        next_sentence_weights[row_of_pair, segment] = 1.0
        return batch | {
            "next_sentence_positions": next_sentence_positions,
            "next_sentence_labels": next_sentence_labels,
            "next_sentence_weights": next_sentence_weights,
        }

    def _words(self, ids: np.ndarray, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The words of [pairs, length] `ids` among the `candidate` tokens (a `##` piece, or a
        byte-level piece without a leading space, joins the word before it): word starts, each
        token's word number (1, 2, ... within its pair; 0 elsewhere) and each word's length in
        tokens ([pairs, length + 1], by word number)."""
        pairs, length = ids.shape
        previous_candidate = np.pad(candidate[:, :-1], ((0, 0), (1, 0)))
        starts = candidate & (~self.is_subword[ids] | ~previous_candidate)
        word = np.where(candidate, np.cumsum(starts, axis=1), 0)
        flat_word = np.arange(pairs)[:, None] * (length + 1) + word
        word_len = np.bincount(flat_word[candidate], minlength=pairs * (length + 1)).reshape(pairs, length + 1)
        return starts, word, word_len

    def _spans(
        self, ids: np.ndarray, candidate: np.ndarray, hashes: np.ndarray, to_predict: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """SpanBERT's masking (Joshi et al. 2020) of [pairs, length] `ids`: spans of whole words,
        each of a length in words drawn from a geometric distribution (`span_length_p`) truncated
        to `span_max_words`, starting at a uniformly drawn word, taken in turn until `to_predict`
        tokens are chosen (a span that overlaps a taken one or would overshoot is skipped).

        Returns the chosen tokens and, per token, the key of its span's 80/10/10 choice (the
        span's first token's), so that a whole span is [MASK], random tokens, or kept.
        """
        pairs, length = ids.shape
        starts, word, word_len = self._words(ids, candidate)
        num_words = word.max(axis=1)
        ends = np.cumsum(word_len, axis=1)  # tokens in words 0..w (word 0: not a word, length 0)
        p, longest = self.config.span_length_p, self.config.span_max_words
        span_words = span_lengths(_unit_floats(_mix64(hashes[0] ^ _GOLDEN)), p, longest)
        taken = np.zeros((pairs, length + 1), bool)
        span_start = np.zeros((pairs, length + 1), np.int64)  # each taken word's span's first word
        count = np.zeros(pairs, np.int64)
        rows = np.arange(pairs)
        for attempt in range(length):  # one candidate span per pair per attempt, all pairs at once
            first = 1 + (hashes[0][:, attempt] % np.maximum(num_words, 1).astype(np.uint64)).astype(np.int64)
            last = np.minimum(first + span_words[:, attempt] - 1, num_words)
            tokens = ends[rows, last] - ends[rows, first - 1]
            taken_before = np.cumsum(taken, axis=1)
            overlaps = taken_before[rows, last] - taken_before[rows, first - 1] > 0
            take = (num_words > 0) & ~overlaps & (count + tokens <= to_predict)
            if not take.any():
                if (count >= to_predict).all():
                    break
                continue
            in_span = (np.arange(length + 1)[None, :] >= first[:, None]) & (
                np.arange(length + 1)[None, :] <= last[:, None]
            )
            in_span &= take[:, None]
            taken |= in_span
            span_start = np.where(in_span, first[:, None], span_start)
            count += np.where(take, tokens, 0)
        chosen = candidate & np.take_along_axis(taken, word, axis=1)
        first_token = np.zeros((pairs, length + 1), np.int64)  # each word's first position
        first_token[np.nonzero(starts)[0], word[starts]] = np.nonzero(starts)[1]
        span_first_token = np.take_along_axis(first_token, np.take_along_axis(span_start, word, axis=1), axis=1)
        return chosen, np.take_along_axis(hashes[1], span_first_token, axis=1)

    def _whole_words(
        self, ids: np.ndarray, candidate: np.ndarray, keys: np.ndarray, to_predict: np.ndarray
    ) -> np.ndarray:
        """Whole-word masking of [pairs, length] `ids`: a `##` piece joins the word before it, and
        words are taken whole in the order of their first piece's key until `to_predict` tokens
        are chosen (a word that would overshoot the count is skipped), as in google-research/bert."""
        pairs, length = ids.shape
        starts, word, word_len = self._words(ids, candidate)
        word_key = np.full((pairs, length + 1), np.iinfo(np.uint64).max, np.uint64)
        word_key[np.nonzero(starts)[0], word[starts]] = keys[starts]
        order = np.argsort(word_key, axis=1, kind="stable")  # the pair's words by key; absent words (length 0) last
        lengths = np.take_along_axis(word_len, order, axis=1)
        taken = np.zeros((pairs, length + 1), bool)
        count = np.zeros(pairs, np.int64)
        for rank in range(int((word_len > 0).sum(1).max(initial=0))):  # greedily, all pairs at once
            take = (lengths[:, rank] > 0) & (count + lengths[:, rank] <= to_predict)
            taken[take, rank] = True
            count += np.where(take, lengths[:, rank], 0)
        taken_words = np.zeros_like(taken)
        np.put_along_axis(taken_words, order, taken, axis=1)
        chosen = candidate & np.take_along_axis(taken_words, word, axis=1)
        return chosen

    @functools.lru_cache(maxsize=4)  # noqa: B019 (a few epochs' orders, for the life of the split)
    def epoch_order(self, epoch: int) -> np.ndarray:
        """The order in which epoch `epoch` visits the instances, keyed by (seed, epoch)."""
        return np.random.default_rng([self.config.seed, _ORDER, epoch]).permutation(len(self))

    def global_indices(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(instance index, epoch) of global example positions start .. start + count - 1."""
        positions = np.arange(start, start + count)
        epochs = positions // len(self)
        indices = np.empty(count, np.int64)
        for epoch in np.unique(epochs):
            rows = epochs == epoch
            indices[rows] = self.epoch_order(int(epoch))[positions[rows] % len(self)]
        return indices, epochs

    def batch(
        self,
        step: int,
        batch_size: int,
        process_index: int = 0,
        process_count: int = 1,
        offset: int = 0,
        masked_lm_prob: float | None = None,
    ) -> Example:
        """This host's rows of global batch `step` (global positions offset + step * batch_size ...)."""
        return self.rows_at(offset + step * batch_size, batch_size, process_index, process_count, masked_lm_prob)

    def rows_at(
        self,
        start: int,
        batch_size: int,
        process_index: int = 0,
        process_count: int = 1,
        masked_lm_prob: float | None = None,
    ) -> Example:
        """This host's rows of the global batch of `batch_size` rows at global positions start ...:
        host k reads the k-th of `process_count` equal slices."""
        local = batch_size // process_count
        indices, epochs = self.global_indices(start + process_index * local, local)
        return self.rows_batch(indices, epochs, masked_lm_prob)


def load_split(prepared: Path, split: str, config: DataConfig, tokenizer: tokenizers.Tokenizer) -> PretrainingExamples:
    """The examples of a prepared split; an empty split is a `DataError`."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}")
    examples = PretrainingExamples(Path(prepared), split, config, tokenizer)
    if len(examples) == 0:
        raise DataError(f"the {split} split prepared in {prepared} has no examples (too little text?)")
    return examples


def batch_iterator(
    examples: PretrainingExamples,
    first_step: int,
    num_steps: int,
    batch_size: int,
    num_threads: int = 2,
    process_index: int = 0,
    process_count: int = 1,
    offset: int = 0,
    num_processes: int = 0,
    sizes: TrainConfig | None = None,
) -> Iterator[Example]:
    """This host's batches for steps first_step .. num_steps - 1, in order, built ahead on threads,
    or with `num_processes` > 0 in that many processes (each with `num_threads` threads). Every
    batch has `batch_size` rows, or with `sizes` the size `sizes.batch_size_at(step)` gives (a
    batch-size warmup), its rows following the previous batch's.

    A batch is a pure function of its step, so the processes (spawned; grain hands worker k the
    steps k, k + n, ...) give the same batches in the same order as the threads.
    """
    import grain  # here: fine-tuning, prediction and packing use this module without it (~0.5 s to import)

    make_batch = functools.partial(
        _batch_of_step,
        examples=examples,
        sizes=sizes or TrainConfig(batch_size=batch_size),
        process_index=process_index,
        process_count=process_count,
        offset=offset,
    )
    steps = grain.MapDataset.range(first_step, num_steps).map(make_batch)
    threads = max(1, num_threads)
    batches = steps.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads))
    if num_processes > 0:
        if not flags.FLAGS.is_parsed():  # grain's workers read its absl flags (an absl app has parsed them)
            flags.FLAGS.mark_as_parsed()
        batches = batches.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_processes, per_worker_buffer_size=2))
    return iter(batches)


def close_batches(batches: Iterator[Example]) -> None:
    """Ends `batch_iterator`'s threads or processes, then waits until grain has released the shared
    memory of the batches its processes sent. grain frees those on a background thread that the
    interpreter's exit would cut short (a resource_tracker warning of "leaked shared_memory
    objects" at the end of each run); from here on it frees them at once (grain's private switch,
    used only where it exists)."""
    close = getattr(batches, "close", None)
    if close is not None:
        close()
    try:
        from grain._src.python.ipc.shared_memory_array import SharedMemoryArray
    except ImportError:
        return
    pool = getattr(SharedMemoryArray, "_del_thread_pool", None)
    if pool is None or not hasattr(SharedMemoryArray, "_disable_async_del"):
        return
    SharedMemoryArray._disable_async_del()  # later frees are synchronous (a new loader turns it on again)
    pool.close()
    pool.join()


def _batch_of_step(
    step: int, *, examples: PretrainingExamples, sizes: TrainConfig, offset: int, **kwargs: Any
) -> Example:
    """Training batch `step`: its size and first row from `sizes`, masked at the rate
    `data.masking_phases` gives that step."""
    step = int(step)
    start = offset + sizes.examples_before(step)
    rate = examples.config.masking_rate(step)
    return examples.rows_at(start, sizes.batch_size_at(step), masked_lm_prob=rate, **kwargs)
