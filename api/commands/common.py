"""Options every command shares, and the settings they produce."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from ..settings import Settings, load_settings


def add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML configuration file (default: $WISPGATE_CONFIG)")
    parser.add_argument("--data-dir", help="data directory for the embedded mode ($WISPGATE_DATA_DIR)")
    parser.add_argument("--database-url", help="postgresql:// URL instead of SQLite ($WISPGATE_DATABASE_URL)")


def add_listen_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--radius-host", help="($WISPGATE_RADIUS_HOST, default 127.0.0.1)")
    parser.add_argument("--radius-port", type=int, help="($WISPGATE_RADIUS_PORT, default 1813)")
    parser.add_argument("--api-host", help="($WISPGATE_API_HOST, default 127.0.0.1)")
    parser.add_argument("--api-port", type=int, help="($WISPGATE_API_PORT, default 8000)")


def settings_from(args: argparse.Namespace) -> Settings:
    """Defaults < TOML file < WISPGATE_* environment < command-line flags."""
    settings = load_settings(getattr(args, "config", None))
    flags = {name: getattr(args, name, None) for name in (
        "data_dir", "database_url", "radius_host", "radius_port", "api_host", "api_port")}
    return settings.with_overrides(**flags)


def parse_moment(text: str | None, *, required: bool = False) -> int:
    """Epoch seconds or ISO 8601 (UTC when no offset is given); empty or None: now, unless
    ``required`` (then a ValueError, like any malformed timestamp)."""
    if not text:
        if required:
            raise ValueError("a timestamp is required")
        return int(time.time())
    if text.isdigit():
        return int(text)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())
