"""Input data: text corpora, pretraining examples, and the real sample data fetched from PyPI."""
