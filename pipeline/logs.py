"""Structured (one JSON object per line) logging for the worker."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from metering.logs import CalmLogs


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extra}``: greppable and machine-readable."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def logging_config(level: str, calm: CalmLogs | None = None) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict that sends everything through :class:`JsonFormatter`,
    and through ``calm`` (``metering.logs.CalmLogs``: a quiet log in an outage) when given. faust
    applies this dict again when its worker starts, so the filter is part of it."""
    handler: dict[str, Any] = {
        "class": "logging.StreamHandler",
        "formatter": "json",
        "stream": "ext://sys.stderr",
    }
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "pipeline.logs.JsonFormatter"}},
        "handlers": {"stderr": handler},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
    }
    if calm is not None:
        config["filters"] = {"calm": {"()": lambda: calm}}
        handler["filters"] = ["calm"]
    return config
