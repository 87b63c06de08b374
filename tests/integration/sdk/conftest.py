"""The SDK against the serving tests' stack: a registry and serving in process, on the
session's broker and database (a stack of this package's own)."""

from tests.integration.serving.conftest import stack

__all__ = ["stack"]
