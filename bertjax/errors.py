"""Errors that mean "the user's input is wrong": entry points print them on one line, exit 2."""


class BertjaxError(Exception):
    """Bad input (a file, a config value, a checkpoint) that the user must fix."""


class ConfigError(BertjaxError):
    """A config key is unknown or holds a bad value."""


class DataError(BertjaxError):
    """A corpus, vocab or prepared data set is missing or malformed."""


class CheckpointError(BertjaxError):
    """A checkpoint does not match the model being trained."""


class TrainingStopped(Exception):
    """Training cannot go on (e.g. a non-finite loss under train.nonfinite=stop); what was saved is kept.

    Not bad input: entry points print it on one line and exit with code 1.
    """
