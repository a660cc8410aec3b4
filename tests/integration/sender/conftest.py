"""The local SMTP server every sender test delivers to."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.conftest import free_port
from tests.integration.sender.servers import SmtpServer


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer(free_port()) as server:
        yield server
