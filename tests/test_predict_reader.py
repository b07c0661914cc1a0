"""predict on files reads them with the adapter options the training store was ingested with."""
from types import SimpleNamespace

import pytest

from pairspec.predict import _file_reader


def _predictor(options):
    return SimpleNamespace(schema=SimpleNamespace(survey="apogee"), meta={"adapter_options": options})


def test_file_reader_takes_the_checkpoint_adapter_options():
    strict = _file_reader(_predictor({"strict": True}))
    default = _file_reader(_predictor({}))
    assert strict.strict is True and default.strict is False


def test_an_option_the_adapter_does_not_take_warns_and_reads_with_defaults():
    with pytest.warns(UserWarning, match="no_such_option"):
        reader = _file_reader(_predictor({"no_such_option": 1}))
    assert reader.strict is False
