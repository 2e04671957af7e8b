"""A TFDS text dataset as the pretraining corpus, through the same code, on local files.

The stock TFDS builders (wikipedia, ...) download from the internet; here a builder over the
sample news articles is prepared locally as array_record (no TensorFlow), then read by name.
"""

import dataclasses
import json

import numpy as np
import pytest

from bertjax.config import DataConfig
from bertjax.data import corpus, pretraining
from bertjax.data.tokenizer import load_tokenizer
from bertjax.errors import DataError

tfds = pytest.importorskip("tensorflow_datasets")


@pytest.fixture(scope="module")
def tfds_dir(sample_files, tmp_path_factory):
    articles = [a for a in sample_files["news"].read_text().split("\n\n") if a.strip()][:80]

    class LocalNews(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = tfds.features.FeaturesDict({"text": tfds.features.Text(), "title": tfds.features.Text()})
            return tfds.core.DatasetInfo(builder=self, features=features)

        def _split_generators(self, dl_manager):
            return {
                "train": self._generate_examples(articles[:70]),
                "validation": self._generate_examples(articles[70:]),
            }

        def _generate_examples(self, texts):
            for i, text in enumerate(texts):
                # Two paragraphs per record, as a wikipedia article has many.
                half = len(text) // 2
                cut = text.find(". ", half) + 1 or half
                yield i, {"text": text[:cut] + "\n" + text[cut:].strip(), "title": f"article {i}"}

    data_dir = tmp_path_factory.mktemp("tfds")
    LocalNews(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    return data_dir


def test_tfds_documents(tfds_dir):
    documents = list(corpus.read_tfds("local_news", "validation", "text", str(tfds_dir)))
    assert len(documents) == 10
    assert all(len(d) >= 2 for d in documents)  # paragraphs split into sentences


def test_prepare_from_tfds(tfds_dir, vocab_file, tmp_path):
    config = DataConfig(
        tfds_name="local_news",
        tfds_split="train",
        tfds_eval_split="validation",
        tfds_data_dir=str(tfds_dir),
        vocab_file=str(vocab_file),
    )
    tokenizer = load_tokenizer(vocab_file)
    prepared = pretraining.prepare(config, tokenizer, tmp_path)

    meta = json.loads((prepared / "meta.json").read_text())
    assert meta["splits"]["train"]["documents"] == 70 and meta["splits"]["eval"]["documents"] == 10
    example = pretraining.load_split(prepared, "eval", config, tokenizer).example(0)
    assert example["input_ids"][0] == 101 and example["masked_lm_weights"].sum() >= 1
    assert np.load(prepared / "train_instances.npy").shape[0] > 70


def test_tfds_errors(tfds_dir, vocab_file, tmp_path):
    with pytest.raises(DataError, match="has no feature 'body'"):
        list(corpus.read_tfds("local_news", "train", "body", str(tfds_dir)))
    with pytest.raises(DataError, match="TFDS dataset no_such_dataset_xyz"):
        list(corpus.read_tfds("no_such_dataset_xyz", "train", "text", str(tmp_path)))
    config = DataConfig(tfds_name="local_news", tfds_data_dir=str(tfds_dir), vocab_file=str(vocab_file))
    # Without an eval split, eval_fraction of the documents is held out.
    prepared = pretraining.prepare(dataclasses.replace(config, eval_fraction=0.1), load_tokenizer(vocab_file), tmp_path)
    assert prepared.is_dir()
