"""The BERT modules (`bert`) and the low-level operations they are built from (`ops`)."""

from bertjax.model.bert import BertForPreTraining, BertForSequenceClassification, BertModel

__all__ = ["BertForPreTraining", "BertForSequenceClassification", "BertModel"]
