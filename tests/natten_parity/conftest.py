"""NATTEN parity tests run in .venv-natten (``make natten-env``).

Outside it they skip with a reason. ``make test`` sets OVERLOCK_REQUIRE_NATTEN=1 so that
in CI a missing NATTEN fails the run instead of skipping silently.
"""

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("OVERLOCK_REQUIRE_NATTEN") != "1":
        return
    try:
        import natten  # noqa: F401
    except ImportError as err:
        raise pytest.UsageError(
            f"OVERLOCK_REQUIRE_NATTEN=1 but NATTEN does not import ({err}); run 'make natten-env'"
        ) from err
