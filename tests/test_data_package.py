"""redi.data's lazy exports and the redi prepare command's registration."""

import redi.data
from redi.cli import COMMANDS


def test_exports_resolve():
    assert len(redi.data.__all__) == 17
    assert all(getattr(redi.data, name) is not None for name in redi.data.__all__)


def test_prepare_is_a_redi_command():
    assert COMMANDS["prepare"][0] == "redi.data.cli:main"
