"""Structured logging: one line per record, text or JSON, with extra fields as key=value."""

from __future__ import annotations

import json
import logging
import sys
import time

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self._json = as_json

    def format(self, record: logging.LogRecord) -> str:
        extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        stamp += f".{int(record.msecs):03d}Z"
        if self._json:
            payload = {"ts": stamp, "level": record.levelname, "logger": record.name,
                       "msg": record.getMessage(), **extra}
            if record.exc_info:
                payload["exc"] = self.formatException(record.exc_info)
            return json.dumps(payload, default=str)
        line = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extra:
            line += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


#: Libraries that log at INFO on every request (faster-whisper: "Processing audio with duration
#: ..."): the service logs its own line per request, so theirs show only at DEBUG.
CHATTY_LOGGERS = ("faster_whisper",)


class _SpuriousDetach(logging.Filter):
    """OpenTelemetry's gRPC instrumentation opens a span around a streaming handler's generator;
    when a stream ends early (a cancelled reply, a client gone), gRPC closes that generator outside
    the task that opened it, and OpenTelemetry logs "Failed to detach context" with a ValueError
    traceback at ERROR although nothing failed (the span still ends): upstream
    open-telemetry/opentelemetry-python-contrib#2357. Shown as one DEBUG line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not (isinstance(error, ValueError) and "different Context" in str(error)):
            return True
        if not logging.getLogger().isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.exc_info, record.exc_text = None, None
        record.msg, record.args = ("context of a span around a stream closed outside its task "
                                   "(opentelemetry-python-contrib#2357)"), ()
        return True


_DETACH_FILTER = _SpuriousDetach()


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Send all logs to stderr in the chosen format (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(as_json=fmt == "json"))
    root.addHandler(handler)
    root.setLevel(level)
    quiet = logging.NOTSET if root.getEffectiveLevel() <= logging.DEBUG else logging.WARNING
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(quiet)
    context_log = logging.getLogger("opentelemetry.context")
    if _DETACH_FILTER not in context_log.filters:
        context_log.addFilter(_DETACH_FILTER)
