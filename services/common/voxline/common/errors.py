"""Domain exceptions shared by every engine, and the one table that maps them to gRPC codes.

Engines raise these (they import no grpc); each class names its gRPC status in ``code_name``.
Servicers translate them once, with ``@voxline.common.grpc_errors.translate_errors`` (which uses
``status_for``).
"""

from __future__ import annotations


class VoxlineError(Exception):
    """Base of every error voxline reports to a client. The message is shown to the user."""

    #: Name of the grpc.StatusCode member this error maps to.
    code_name = "INTERNAL"


class InvalidInput(VoxlineError):
    """The request itself is wrong: bad audio, empty text, unknown voice, bad role."""

    code_name = "INVALID_ARGUMENT"


class LimitExceeded(VoxlineError):
    """The request is over a limit (size, duration, length) or the server is saturated."""

    code_name = "RESOURCE_EXHAUSTED"


class NotConfigured(VoxlineError):
    """The server cannot do this until an operator configures it (no provider, no key)."""

    code_name = "FAILED_PRECONDITION"


class DependencyUnavailable(VoxlineError):
    """A dependency (a provider, another stage) is down or failing; retrying later may work."""

    code_name = "UNAVAILABLE"


class StageDeadlineExceeded(VoxlineError):
    """A stage did not answer within its deadline."""

    code_name = "DEADLINE_EXCEEDED"


class NotReady(VoxlineError):
    """The engine is still loading or warming up."""

    code_name = "UNAVAILABLE"


#: Longest piece of client input quoted back in an error message.
ECHO_LIMIT = 60


def clip(value: object, limit: int = ECHO_LIMIT) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters: an error must stay short
    however large the input it quotes (a 10 KB value once turned the real error into "Stream
    removed")."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}…({len(text)} chars)"
