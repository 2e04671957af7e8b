"""Pretraining examples (masked LM + next sentence prediction) the google-research/bert way.

Two stages, so that training never re-tokenizes:

1. `prepare` reads the corpus once (text files or TFDS), tokenizes every sentence with WordPiece,
   holds out documents for evaluation, and pairs segments as `create_pretraining_data.py` does:
   a chunk of whole sentences filling `max_seq_length - 3` tokens (`short_seq_prob` of the
   chunks aim at a shorter random length), split into A and B; B is the true continuation, or
   with `random_next_prob` (and always for a one-sentence chunk) a run of sentences from another
   document, the unused sentences going back to the pool; the pair is truncated to fit, one token
   at a time from the front or back of the longer segment. `dupe_factor` copies are paired with
   different keys. The result lives in `<cache_dir>/<fingerprint>/`:

       {train,eval}_tokens.npy      the token stream of the split (uint16 when the vocab fits)
       {train,eval}_instances.npy   one row per pair: a_start, a_end, b_start, b_end, is_random_next
       train_token_counts.npy       unigram counts of the training tokens
       meta.json                    what was prepared; written last

   The directory is built under a temporary name and renamed into place when complete, so a
   failed preparation leaves nothing behind and a prepared directory is always whole. The
   fingerprint covers everything that decides its content (files, vocab, pairing settings,
   seed), so a change of any of them prepares anew.

2. `PretrainingExamples.example(index, epoch)` builds `[CLS] A [SEP] B [SEP]` with token types and
   masks it at read time with a key made of (seed, epoch, index): `masked_lm_prob` of the tokens
   (at most `max_predictions_per_seq`, never [CLS]/[SEP]/[PAD]), 80% replaced by [MASK], 10% by a
   random token, 10% kept; optionally whole words. Static masking uses epoch 0 for every epoch
   (google-research/bert's fixed masks, one set per dupe copy); dynamic masking draws new masks
   each epoch. `batch(step, ...)` takes the rows of one global batch that belong to this host from
   an epoch order keyed by (seed, epoch); `batch_iterator` builds them ahead on grain threads.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from absl import flags
import grain
import numpy as np
import tokenizers

from bertjax.config import DataConfig
from bertjax.data import corpus
from bertjax.errors import DataError
from bertjax.tokenizer import special_ids, subword_flags

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


def tokenize_documents(documents: Iterable[corpus.Document], tokenizer: tokenizers.Tokenizer) -> TokenizedDocuments:
    """Tokenizes every sentence (no special tokens); empty sentences and documents are dropped."""
    token_chunks: list[np.ndarray] = []
    sentence_lengths: list[int] = []
    document_sizes: list[int] = []
    pending: list[str] = []
    pending_docs: list[int] = []

    def flush() -> None:
        encodings = tokenizer.encode_batch(pending, add_special_tokens=False)
        offset = 0
        for size in pending_docs:
            lengths = [len(e.ids) for e in encodings[offset : offset + size]]
            kept = 0
            for encoding, length in zip(encodings[offset : offset + size], lengths):
                if length:
                    token_chunks.append(np.asarray(encoding.ids, np.int32))
                    sentence_lengths.append(length)
                    kept += 1
            if kept:
                document_sizes.append(kept)
            offset += size
        pending.clear()
        pending_docs.clear()

    for document in documents:
        pending.extend(document)
        pending_docs.append(len(document))
        if len(pending) >= _ENCODE_BATCH:
            flush()
    if pending:
        flush()
    tokens = np.concatenate(token_chunks) if token_chunks else np.zeros(0, np.int32)
    ends = np.cumsum(sentence_lengths, dtype=np.int64)
    sentence_bounds = np.stack([ends - np.asarray(sentence_lengths, np.int64), ends], axis=1).reshape(-1, 2)
    doc_ends = np.cumsum(document_sizes, dtype=np.int64)
    document_bounds = np.stack([doc_ends - np.asarray(document_sizes, np.int64), doc_ends], axis=1).reshape(-1, 2)
    return TokenizedDocuments(tokens, sentence_bounds, document_bounds)


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
    """The segment pairs of one document (create_instances_from_document in google-research/bert)."""
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
            is_random_next = len(chunk) == 1 or rng.random() < config.random_next_prob
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
                # A one-sentence chunk in a one-document corpus: there is no other document to
                # draw B from, and no continuation either.
                chunk_start, chunk_tokens, i = i + 1, 0, i + 1
                target = target_length()
                continue
            spans = [int(a_span[0]), int(a_span[1]), int(b_span[0]), int(b_span[1])]
            _truncate_pair(spans, max_num_tokens, rng)
            if spans[1] > spans[0] and spans[3] > spans[2]:
                instances.append((*spans, int(is_random_next)))
            chunk_start, chunk_tokens = i + 1, 0
            target = target_length()
        i += 1
    return instances


def create_instances(docs: TokenizedDocuments, config: DataConfig, split_key: int) -> np.ndarray:
    """All segment pairs of a split, `dupe_factor` times with different pairing keys: [N, 5] int64."""
    rows: list[tuple[int, int, int, int, int]] = []
    for dupe in range(config.dupe_factor):
        rng = np.random.default_rng([config.seed, _PAIRING, split_key, dupe])
        for index in range(len(docs)):
            rows.extend(_instances_of_document(docs, index, config, rng))
    return np.asarray(rows, np.int64).reshape(-1, 5)


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
        "short_seq_prob": config.short_seq_prob,
        "random_next_prob": config.random_next_prob,
        "dupe_factor": config.dupe_factor,
        "seed": config.seed,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _limited(documents: Iterator[corpus.Document], limit: int) -> Iterator[corpus.Document]:
    for count, document in enumerate(documents):
        if limit and count >= limit:
            return
        yield document


def read_documents(config: DataConfig) -> tuple[list[corpus.Document], list[corpus.Document]]:
    """(train, eval) documents: eval from its own files/split, or a keyed random hold-out."""
    if config.train_files:
        train_docs = list(_limited(corpus.read_text_files(config.train_files, config.corpus_format), config.max_documents))
        eval_source = corpus.read_text_files(config.eval_files, config.corpus_format) if config.eval_files else None
        where = f"corpus {','.join(config.train_files)}"
    else:
        read = functools.partial(
            corpus.read_tfds, config.tfds_name, text_feature=config.tfds_text_feature, data_dir=config.tfds_data_dir
        )
        train_docs = list(_limited(read(split=config.tfds_split), config.max_documents))
        eval_source = read(split=config.tfds_eval_split) if config.tfds_eval_split else None
        where = f"TFDS dataset {config.tfds_name} split {config.tfds_split}"
    if eval_source is not None:
        return train_docs, list(eval_source)
    if len(train_docs) < 2:
        raise DataError(f"{where} has {len(train_docs)} document(s): too few to hold out evaluation documents")
    num_eval = min(len(train_docs) - 1, max(1, round(len(train_docs) * config.eval_fraction)))
    order = np.random.default_rng([config.seed, _HOLDOUT]).permutation(len(train_docs))
    held_out = set(order[:num_eval].tolist())
    return (
        [d for i, d in enumerate(train_docs) if i not in held_out],
        [d for i, d in enumerate(train_docs) if i in held_out],
    )


def _token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


def prepare(config: DataConfig, tokenizer: tokenizers.Tokenizer, cache_dir: str | Path) -> Path:
    """The prepared directory for `config` under `cache_dir`, built now unless it already exists."""
    cache_dir = Path(cache_dir)
    final = cache_dir / fingerprint(config, tokenizer)
    if (final / "meta.json").is_file():
        return final
    created = [p for p in (cache_dir, *cache_dir.parents) if not p.exists()]
    temporary = cache_dir / f".{final.name}.tmp-{os.getpid()}"
    try:
        temporary.mkdir(parents=True, exist_ok=False)
        train_docs, eval_docs = read_documents(config)
        vocab_size = tokenizer.get_vocab_size()
        meta: dict[str, Any] = {"format": FORMAT_VERSION, "fingerprint": final.name, "vocab_size": vocab_size}
        meta["splits"] = {}
        for key, (split, documents) in enumerate((("train", train_docs), ("eval", eval_docs))):
            docs = tokenize_documents(documents, tokenizer)
            instances = create_instances(docs, config, key)
            np.save(temporary / f"{split}_tokens.npy", docs.tokens.astype(_token_dtype(vocab_size)))
            np.save(temporary / f"{split}_instances.npy", instances)
            if split == "train":
                np.save(temporary / "train_token_counts.npy", np.bincount(docs.tokens, minlength=vocab_size))
            meta["splits"][split] = {
                "documents": len(docs),
                "sentences": len(docs.sentence_bounds),
                "tokens": len(docs.tokens),
                "instances": len(instances),
                "random_next": int(instances[:, 4].sum()),
            }
        (temporary / "meta.json").write_text(json.dumps(meta, indent=2))
        try:
            temporary.rename(final)
        except OSError:
            if not (final / "meta.json").is_file():  # not another process that prepared it first
                raise
    finally:
        if temporary.exists():
            shutil.rmtree(temporary)
        if not final.exists():
            for directory in created:  # leave no empty directories behind a failed preparation
                if directory.exists() and not any(directory.iterdir()):
                    directory.rmdir()
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


class PretrainingExamples:
    """Random access to the masked rows of one prepared split (one pair per row, or packed)."""

    def __init__(self, prepared: Path, split: str, config: DataConfig, tokenizer: tokenizers.Tokenizer) -> None:
        self.tokens = np.load(prepared / f"{split}_tokens.npy", mmap_mode="r")
        self.instances = np.load(prepared / f"{split}_instances.npy")
        self.config = config
        self.special = special_ids(tokenizer)
        self.is_subword = subword_flags(tokenizer)
        vocab_size = tokenizer.get_vocab_size()
        specials = [self.special.pad, self.special.unk, self.special.cls, self.special.sep, self.special.mask]
        self.random_tokens = np.setdiff1d(np.arange(vocab_size), specials).astype(np.int32)
        lengths = self.instances[:, 1] - self.instances[:, 0] + self.instances[:, 3] - self.instances[:, 2] + 3
        if config.pack_examples == 1:
            self.rows = np.arange(len(self.instances))[:, None]
            self.predictions_per_row = config.max_predictions_per_seq
        else:
            self.rows = pack(lengths, config.max_seq_length, config.pack_examples)
            # Each pair predicts at most max(1, round(len * p)) (capped) tokens: a row of
            # max_seq_length tokens at most ceil(p * max_seq_length) + one per pair.
            bound = int(np.ceil(config.masked_lm_prob * config.max_seq_length)) + config.pack_examples
            self.predictions_per_row = min(config.pack_examples * config.max_predictions_per_seq, bound)
        self.fill = float(lengths.sum()) / (len(self.rows) * config.max_seq_length) if len(self.rows) else 0.0

    def __len__(self) -> int:
        """The number of rows (pairs, or packs of pairs) in one epoch."""
        return len(self.rows)

    def _masking_rng(self, index: int, epoch: int) -> np.random.Generator:
        masking_epoch = epoch if self.config.masking == "dynamic" else 0
        return np.random.default_rng([self.config.seed, _MASKING, masking_epoch, index])

    def _masked_pair(self, instance: int, epoch: int) -> tuple[np.ndarray, ...]:
        """Instance `instance` as unpadded (input_ids, token_type_ids, positions, labels, is_random_next),
        masked with the key (seed, epoch or 0, instance)."""
        special = self.special
        a_start, a_end, b_start, b_end, is_random_next = (int(v) for v in self.instances[instance])
        a = np.asarray(self.tokens[a_start:a_end], np.int32)
        b = np.asarray(self.tokens[b_start:b_end], np.int32)
        input_ids = np.concatenate([[special.cls], a, [special.sep], b, [special.sep]]).astype(np.int32)
        token_type_ids = np.zeros(len(input_ids), np.int32)
        token_type_ids[len(a) + 2 :] = 1

        rng = self._masking_rng(instance, epoch)
        positions = self._choose_positions(input_ids, rng)
        labels = input_ids[positions].copy()
        draw = rng.random(len(positions))
        replacement = np.where(draw < 0.8, special.mask, labels)  # 80% [MASK]
        random_rows = draw >= 0.9  # 10% a random token, the other 10% keep theirs
        replacement[random_rows] = rng.choice(self.random_tokens, size=int(random_rows.sum()))
        input_ids[positions] = replacement
        return input_ids, token_type_ids, positions, labels, np.int32(is_random_next)

    def example(self, index: int, epoch: int = 0) -> Example:
        """Row `index` as model inputs: one masked pair, or with packing up to `pack_examples`.

        A packed row holds its pairs one after another; `attention_mask` is 1, 2, ... on the
        tokens of the first, second, ... pair (0 on padding), so the model keeps attention and
        positions within each pair. Its masked-LM positions index the row, and it has one NSP
        slot per pair: `next_sentence_positions` (the pair's [CLS]), labels and weights.
        """
        cfg = self.config
        length = cfg.max_seq_length
        input_ids = np.zeros(length, np.int32)
        token_type_ids = np.zeros(length, np.int32)
        attention_mask = np.zeros(length, np.int32)
        pieces = [self._masked_pair(int(i), epoch) for i in self.rows[index] if i >= 0]
        offset = 0
        all_positions, all_labels, cls_positions, nsp_labels = [], [], [], []
        for segment, (ids, types, positions, labels, is_random_next) in enumerate(pieces, start=1):
            input_ids[offset : offset + len(ids)] = ids
            token_type_ids[offset : offset + len(ids)] = types
            attention_mask[offset : offset + len(ids)] = segment
            all_positions.append(positions + offset)
            all_labels.append(labels)
            cls_positions.append(offset)
            nsp_labels.append(is_random_next)
            offset += len(ids)
        positions, labels = np.concatenate(all_positions), np.concatenate(all_labels)

        predictions = self.predictions_per_row
        masked_lm_positions = np.zeros(predictions, np.int32)
        masked_lm_ids = np.zeros(predictions, np.int32)
        masked_lm_weights = np.zeros(predictions, np.float32)
        masked_lm_positions[: len(positions)] = positions
        masked_lm_ids[: len(positions)] = labels
        masked_lm_weights[: len(positions)] = 1.0
        example = {
            "input_ids": input_ids,
            "token_type_ids": token_type_ids,
            "attention_mask": attention_mask,
            "masked_lm_positions": masked_lm_positions,
            "masked_lm_ids": masked_lm_ids,
            "masked_lm_weights": masked_lm_weights,
        }
        if cfg.pack_examples == 1:
            return example | {"next_sentence_labels": nsp_labels[0]}
        slots = cfg.pack_examples
        pad = slots - len(pieces)
        return example | {
            "next_sentence_positions": np.asarray(cls_positions + [0] * pad, np.int32),
            "next_sentence_labels": np.asarray(nsp_labels + [0] * pad, np.int32),
            "next_sentence_weights": np.asarray([1.0] * len(pieces) + [0.0] * pad, np.float32),
        }

    def _choose_positions(self, ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Sorted positions to predict: round(len * masked_lm_prob), capped, never [CLS]/[SEP].

        With whole-word masking a `##` piece joins the word before it and words are taken whole
        (a word that would overshoot the count is skipped), as in google-research/bert.
        """
        cfg = self.config
        num_to_predict = min(cfg.max_predictions_per_seq, max(1, round(len(ids) * cfg.masked_lm_prob)))
        candidates = np.flatnonzero((ids != self.special.cls) & (ids != self.special.sep))
        if not cfg.whole_word_masking:
            chosen = rng.permutation(candidates)[:num_to_predict]
            return np.sort(chosen).astype(np.int32)
        starts = ~self.is_subword[ids[candidates]] | (np.diff(candidates, prepend=-2) != 1)
        words = np.split(candidates, np.flatnonzero(starts)[1:])
        chosen_list: list[int] = []
        for w in rng.permutation(len(words)):
            if len(chosen_list) >= num_to_predict:
                break
            if len(chosen_list) + len(words[w]) <= num_to_predict:
                chosen_list.extend(words[w].tolist())
        return np.sort(np.asarray(chosen_list, np.int32))

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
        self, step: int, batch_size: int, process_index: int = 0, process_count: int = 1, offset: int = 0
    ) -> Example:
        """This host's rows of global batch `step` (global positions offset + step * batch_size ...)."""
        local = batch_size // process_count
        start = offset + step * batch_size + process_index * local
        indices, epochs = self.global_indices(start, local)
        examples = [self.example(int(i), int(e)) for i, e in zip(indices, epochs)]
        return {key: np.stack([ex[key] for ex in examples]) for key in examples[0]}


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
) -> Iterator[Example]:
    """This host's batches for steps first_step .. num_steps - 1, in order, built ahead on threads,
    or with `num_processes` > 0 in that many processes (each with `num_threads` threads).

    A batch is a pure function of its step, so the processes (spawned; grain hands worker k the
    steps k, k + n, ...) give the same batches in the same order as the threads.
    """
    make_batch = functools.partial(
        _batch_of_step,
        examples=examples,
        batch_size=batch_size,
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


def _batch_of_step(step: int, *, examples: PretrainingExamples, **kwargs: Any) -> Example:
    return examples.batch(int(step), **kwargs)
