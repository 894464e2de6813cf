"""A database URL is shown without its password, however it is written: parsed or not, in a
query string, in an option, or inside another message."""

from __future__ import annotations

import pytest

from taiat.store.db import mask_url


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://u:S3cret@h/db", "postgresql://u:***@h/db"),
        ("postgresql//u:S3cret@h/db", "postgresql//u:***@h/db"),  # cannot be parsed
        ("postgresql://u:S3cret@[::1:5432/db", "postgresql://u:***@[::1:5432/db"),
        ("postgresql://u:S3c@ret@h/db", "postgresql://u:***@h/db"),
        (
            "postgresql://u@h/db?password=S3cret&sslmode=require",
            "postgresql://u@h/db?password=***&sslmode=require",
        ),
        ("--database-url=postgres:u:S3cret@h", "--database-url=postgres:***@h"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("sqlite:////var/lib/taiat/taiat.db", "sqlite:////var/lib/taiat/taiat.db"),
        (
            "unmatched [Option(None, '--database-url', 1, 'postgresql://u:S3cret@h/db'), "
            "Argument(None, 'postgresql://v:S3cret@h/db')]",
            "unmatched [Option(None, '--database-url', 1, 'postgresql://u:***@h/db'), "
            "Argument(None, 'postgresql://v:***@h/db')]",
        ),
    ],
)
def test_mask_url_hides_every_password(text: str, shown: str) -> None:
    assert mask_url(text) == shown
