"""``metering run sidecar``: the enforcement sidecar as a process, configured by ``METERING_*``
variables (Redis, API keys, fail modes, the price book's features, the Redis deadline).

Answers ``/v1/check``, ``/v1/reserve``, ``/v1/commit``, ``/v1/release`` and ``/v1/balance``
for services holding an API key; see docs/projections.md.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

from starlette.applications import Starlette

from metering.config import env_value
from metering.logs import service_logging
from projections.failmode import FailMode, parse_unseen
from projections.features import FeatureCatalog
from projections.keys import prefix_from_env
from projections.sidecar import DEFAULT_DEADLINE_S, Sidecar, parse_api_keys


def app_from_env(env: Mapping[str, str] | None = None) -> Starlette:
    """Build the app from ``METERING_*`` variables (what ``metering run sidecar`` does)."""
    return sidecar_from_env(env).app


def sidecar_from_env(env: Mapping[str, str] | None = None) -> Sidecar:
    """The sidecar ``METERING_*`` variables describe (``run sidecar`` and ``run web``)."""
    from metering.config import load_settings

    env = os.environ if env is None else env
    settings = load_settings(env)
    keys = parse_api_keys(env_value("METERING_API_KEYS", env))
    mode = FailMode.parse(env_value("METERING_FAIL_MODE", env, "auto"))
    unseen = parse_unseen(env_value("METERING_FAIL_MODE_UNSEEN", env, "closed"))
    deadline = env_value("METERING_REDIS_DEADLINE_MS", env, str(DEFAULT_DEADLINE_S * 1000))
    try:
        deadline_ms = float(deadline)
    except ValueError:
        raise ValueError(
            f"METERING_REDIS_DEADLINE_MS={deadline!r}: expected milliseconds"
        ) from None
    return Sidecar(
        settings.redis_url,
        prefix_from_env(),
        keys,
        mode,
        unseen=unseen,
        # Reloaded by the sidecar's own background task, off the event loop (a YAML parse
        # inside a request would eat its Redis deadline).
        features=FeatureCatalog.from_settings(settings, check_interval_s=None),
        deadline_s=deadline_ms / 1000,
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="metering run sidecar",
        description="Serve the enforcement HTTP API (/v1/check, /v1/reserve, /v1/commit, "
        "/v1/release, /v1/balance) that services call with an API key before spending "
        "credits. Configured by METERING_* variables: Redis, API keys (METERING_API_KEYS), "
        "fail modes and the Redis deadline. OpenAPI at /openapi.json.",
    )
    parser.add_argument(
        "--host",
        default=env_value("METERING_SIDECAR_HOST", default="127.0.0.1"),
        help="address to listen on (default: METERING_SIDECAR_HOST, else 127.0.0.1)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(env_value("METERING_SIDECAR_PORT", default="8088")),
        help="port to listen on (default: METERING_SIDECAR_PORT, else 8088)",
    )
    parser.add_argument(
        "--fail-mode",
        choices=[m.value for m in FailMode],
        default=None,
        metavar="MODE",
        help="answers while Redis is unreachable: open (allow), closed (deny) or auto (deny "
        "only accounts whose overage policy is block) (default: METERING_FAIL_MODE, else auto)",
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        metavar="LEVEL",
        help="debug, info, warning or error (default: warning)",
    )
    args = parser.parse_args(argv)
    import uvicorn

    service_logging(args.log_level, "sidecar", None)  # Redis errors rate-limited
    env = dict(os.environ)
    if args.fail_mode:
        env["METERING_FAIL_MODE"] = args.fail_mode
    try:
        app = app_from_env(env)
    except ValueError as exc:
        print(f"metering run sidecar: {exc}", flush=True)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0
