"""`wispgate demo`: a simulated BNG feed through the real RADIUS port of a running site.

    wispgate demo --setup --token $ADMIN_TOKEN     # NAS, plan and demo accounts through the API, then the feed
    wispgate demo --subscribers 50 --rounds 10     # the feed only (the NAS and accounts exist)

Subscribers ``demo0001..`` each start a session, send ``--rounds`` Interim-Updates
``--interval`` seconds apart with growing counters (a few GB each), then Stop. Every request
waits for its Accounting-Response (retransmitted like a NAS when none comes)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import httpx

from adapters.radius.demo_feed import DemoFeed, FeedStats

from ..settings import Settings
from .common import add_listen_options


def register(commands: Any) -> None:
    parser = commands.add_parser("demo", help="a simulated BNG: sessions with growing counters to the RADIUS port")
    add_listen_options(parser)
    parser.add_argument("--subscribers", type=int, default=20, help="simulated subscribers (default 20)")
    parser.add_argument("--rounds", type=int, default=5, help="Interim-Updates per session (default 5)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between Interim-Updates (default 2)")
    parser.add_argument("--secret", default="testing123", help="the NAS's shared secret (default testing123)")
    parser.add_argument("--nas-ip", default="127.0.0.1", help="NAS-IP-Address sent (default 127.0.0.1)")
    parser.add_argument("--prefix", default="demo", help="usernames are PREFIX0001, PREFIX0002, ...")
    parser.add_argument("--seed", type=int, default=1, help="traffic pattern seed")
    parser.add_argument("--timeout", type=float, default=2.0,
                        help="seconds to wait for an answer before retransmitting (default 2)")
    parser.add_argument("--retries", type=int, default=3, help="retransmissions of an unanswered request (default 3)")
    parser.add_argument("--setup", action="store_true",
                        help="first create the NAS (if its address is new), a plan and the accounts through the API")
    parser.add_argument("--token", help="an admin API token (needed with --setup)")
    parser.set_defaults(handler=demo)


def demo(settings: Settings, args: argparse.Namespace) -> int:
    for name in ("subscribers", "rounds"):
        if getattr(args, name) < (1 if name == "subscribers" else 0):
            print(f"wispgate demo: --{name} must be positive", file=sys.stderr)
            return 2
    if args.interval < 0 or args.retries < 0:
        print(f"wispgate demo: --{'interval' if args.interval < 0 else 'retries'} must not be negative",
              file=sys.stderr)
        return 2
    if args.timeout <= 0:
        print("wispgate demo: --timeout must be positive", file=sys.stderr)
        return 2
    usernames = [f"{args.prefix}{n:04d}" for n in range(1, args.subscribers + 1)]
    if args.setup:
        if not args.token:
            print("wispgate demo: --setup needs --token (an admin token: wispgate token create --role admin)",
                  file=sys.stderr)
            return 2
        api = f"http://{settings.api_host}:{settings.api_port}"
        try:
            created = set_up(api, args.token, args.nas_ip, args.secret, usernames)
        except (httpx.HTTPError, SetupFailed) as error:
            print(f"wispgate demo: setup through {api} failed: {error}", file=sys.stderr)
            return 1
        print(f"set up through {api}: {created}", flush=True)
    feed = DemoFeed(settings.radius_host, settings.radius_port, args.secret, usernames, nas_ip=args.nas_ip,
                    seed=args.seed, timeout=args.timeout, retries=args.retries)
    print(f"simulated BNG {args.nas_ip}: {len(usernames)} subscribers -> "
          f"{settings.radius_host}:{settings.radius_port}/udp, {args.rounds} interims {args.interval:g} s apart",
          flush=True)

    def report(number: int, stats: FeedStats) -> None:
        what = "started" if number == 0 else f"interim {number}/{args.rounds}"
        print(f"  {what}: {stats.acknowledged}/{stats.sent} acknowledged, {stats.retransmissions} retransmitted, "
              f"{stats.unanswered} unanswered, {stats.bytes_reported / 1e9:,.1f} GB reported", flush=True)

    try:
        asyncio.run(feed.run(args.rounds, args.interval, report))
    except KeyboardInterrupt:
        print("interrupted: open sessions were stopped", file=sys.stderr)
    stats = feed.stats
    print(f"done: {stats.acknowledged}/{stats.sent} acknowledged ({stats.by_status}), "
          f"{stats.bytes_reported / 1e9:,.1f} GB reported ({stats.bytes_reported} bytes)", flush=True)
    if stats.unanswered:
        print(f"wispgate demo: {stats.unanswered} requests were never answered (is the NAS registered with this "
              f"address and secret, and the site active?)", file=sys.stderr)
        return 1
    return 0


class SetupFailed(Exception):
    pass


def set_up(api: str, token: str, nas_ip: str, secret: str, usernames: list[str]) -> str:
    """The NAS (unless one has this address), a demo plan and one account per username (a
    username that already has an account is left as it is). Returns a summary."""
    done = []
    with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        listed = _ok(client.get("/v1/nas"))
        if not any(row.get("address") == nas_ip for row in listed):
            _ok(client.post("/v1/nas", json={"name": "demo-bng", "address": nas_ip, "secret": secret,
                                              "vendor": "generic"}))
            done.append(f"NAS {nas_ip}")
        plan = _ok(client.post("/v1/plans", json={"name": "Demo 25", "currency": "USD", "monthly_fee": "25.00",
                                                   "price_per_gb": "0.50"}))["id"]
        done.append(f"plan {plan}")
        opened = 0
        for username in usernames:
            response = client.post("/v1/accounts", json={"name": f"Demo {username}", "plan_id": plan,
                                                         "usernames": [username]})
            if response.status_code == 409:
                continue  # this username has an account from an earlier demo
            _ok(response)
            opened += 1
        done.append(f"{opened} accounts ({len(usernames) - opened} existed)")
    return ", ".join(done)


def _ok(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        detail = response.text[:300]
        raise SetupFailed(f"{response.request.method} {response.request.url.path}: HTTP {response.status_code} "
                          f"{detail}")
    return response.json()
