"""Database URLs that cannot name a server are refused as input (exit 2), never a traceback."""

from __future__ import annotations

import pytest

from labvault.errors import ValidationError
from labvault.storage.meta.store import MetaStore


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@a..b/x",  # an empty DNS label: UnicodeError from the idna codec
        "postgresql://u@" + "a" * 70 + "/x",  # a DNS label over 63 characters
        "postgresql://u@[::1/x",  # an unclosed IPv6 literal: ValueError
        "postgresql://u@h\udcff/x",  # an undecodable byte from the command line
        "postgresql://u:secret@h:99999/x",  # no such port
    ],
)
def test_a_url_that_names_no_server_is_refused(url: str) -> None:
    with pytest.raises(ValidationError) as err:
        MetaStore(url).schema_is_current()
    assert err.value.exit_code == 2
    assert "secret" not in err.value.message  # a password never reaches an error line
