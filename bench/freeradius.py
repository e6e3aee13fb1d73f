"""The reference: FreeRADIUS 3 (Debian packages) writing accounting into PostgreSQL with rlm_sql,
the stock postgresql dialect, queries and radacct schema.

Installed with apt when missing. The configuration is self-contained under bench/out/ (nothing
in /etc is touched) and deliberately FreeRADIUS's best case: one virtual server on a spare
127.0.0.1 port whose accounting section runs only ``acct_unique`` and ``sql`` (no detail file,
no radutmp), with the stock thread pool and SQL connection pool. radacct is pre-filled with
history (closed and open sessions) and analysed, as a production table would be, so the
planner uses the stock indexes; each run gets a fresh copy of that database (CREATE DATABASE
... TEMPLATE).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from .loadgen import LoadResult, run_load
from .target import BenchConfig, Metrics, admin_dsn, free_port, peak_rss_mib
from .workload import build_sessions

STOCK = Path("/etc/freeradius/3.0")
SCHEMA = STOCK / "mods-config/sql/main/postgresql/schema.sql"
SQL_DRIVER = Path("/usr/lib/freeradius/rlm_sql_postgresql.so")
PACKAGES = ["freeradius", "freeradius-postgresql"]


def ensure_installed() -> None:
    """apt-get install FreeRADIUS and its PostgreSQL driver unless present (idempotent, fast)."""
    if shutil.which("freeradius") and SQL_DRIVER.exists() and SCHEMA.exists():
        return
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        done = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"apt-get install {' '.join(PACKAGES)} failed:\n{done.stderr[-2000:]}")


def _dsn_for(database: str) -> str:
    return urlunsplit(urlsplit(admin_dsn())._replace(path=f"/{database}"))


def _prefill_sql(closed: int, open_: int) -> str:
    """History like a production radacct: closed sessions over the last weeks, some still open."""
    return f"""
    INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, nasportid, nasporttype,
        acctstarttime, acctupdatetime, acctstoptime, acctinterval, acctsessiontime, acctauthentic,
        acctinputoctets, acctoutputoctets, calledstationid, callingstationid, acctterminatecause,
        servicetype, framedprotocol, framedipaddress)
    SELECT 'H-' || g, md5('history-' || g), 'sub' || lpad((g % 500000)::text, 7, '0'), '127.0.0.1',
        (g % 65536)::text, 'Ethernet',
        to_timestamp(1790000000 + g * 4), to_timestamp(1790000000 + g * 4 + 3600),
        CASE WHEN g > {closed} THEN NULL ELSE to_timestamp(1790000000 + g * 4 + 3600) END,
        300, 3600, 'RADIUS', (g * 7919) % 40000000000, (g * 104729) % 400000000000,
        'bng-1', '02:00:00:00:00:00', CASE WHEN g > {closed} THEN '' ELSE 'User-Request' END,
        'Framed-User', 'PPP', ('100.64.0.0'::inet + (g % 4000000))
    FROM generate_series(1::bigint, {closed + open_}) AS g;
    """


class FreeRadiusSql:
    """FreeRADIUS + rlm_sql (PostgreSQL): the accounting path WISPs run today."""

    name = "FreeRADIUS+SQL"

    def __init__(self) -> None:
        self.template = ""

    def prepare(self, config: BenchConfig) -> None:
        ensure_installed()
        self.template = f"bench_radacct_{config.history_closed}_{config.history_open}"
        with psycopg.connect(admin_dsn(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.template,)).fetchone()
        if exists:
            try:
                with psycopg.connect(_dsn_for(self.template)) as conn:
                    if conn.execute("SELECT done FROM bench_prefill").fetchone():
                        return
            except psycopg.Error:
                pass
            with psycopg.connect(admin_dsn(), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE "{self.template}" WITH (FORCE)')
        print(f"  preparing radacct with {config.history_closed:,} closed + {config.history_open:,} open "
              "sessions (once; kept as a template database)", flush=True)
        with psycopg.connect(admin_dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.template}"')
        with psycopg.connect(_dsn_for(self.template), autocommit=True) as conn:
            conn.execute(SCHEMA.read_text())  # type: ignore[arg-type]  # a trusted, stock script
            conn.execute(_prefill_sql(config.history_closed, config.history_open))  # type: ignore[arg-type]
            conn.execute("VACUUM ANALYZE radacct")
            conn.execute("CREATE TABLE bench_prefill (done boolean)")
            conn.execute("INSERT INTO bench_prefill VALUES (true)")

    def versions(self) -> dict[str, str]:
        done = subprocess.run(["freeradius", "-v"], capture_output=True, text=True, check=False)
        first = (done.stdout or done.stderr).splitlines()
        with psycopg.connect(admin_dsn()) as conn:
            pg = conn.execute("SHOW server_version").fetchone()
        return {"FreeRADIUS": first[0].split("Version")[-1].strip(" ,") if first else "?",
                "PostgreSQL": str(pg[0]) if pg else "?"}

    # ---- one run ----------------------------------------------------------------------

    def run(self, config: BenchConfig, index: int) -> Metrics:
        database = f"bench_radacct_run{index}_{os.getpid()}"  # concurrent invocations must not collide
        with psycopg.connect(admin_dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{database}" TEMPLATE "{self.template}"')
        port = free_port(socket.SOCK_DGRAM)
        raddb = write_config(config.out / "freeradius", port, config.secret, urlsplit(_dsn_for(database)))
        log_path = config.out / "freeradius" / f"radiusd-run{index}.log"
        log_path.unlink(missing_ok=True)
        process = subprocess.Popen(["freeradius", "-f", "-d", str(raddb), "-l", str(log_path)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_ready(process, log_path)
            size_before = _radacct_size(database)
            tag = f"R{index}"
            sessions = build_sessions(config.sessions, config.interims, seed=config.seed + index, tag=tag)
            load = asyncio.run(run_load("127.0.0.1", port, config.secret, sessions, inflight=config.inflight))
            rss = peak_rss_mib(process.pid)
            rss_pg = _postgres_backends_rss(database)
            missing = verify(database, tag, load)
            size_after = _radacct_size(database)
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            with psycopg.connect(admin_dsn(), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        not_applicable = "n/a (no rating or read models)"
        return {
            "ingest_rate": load.rate,
            "pipeline_rate": load.rate,  # radacct is final when the ack goes out
            "latency_p50": load.percentile(0.5) * 1000,
            "latency_p99": load.percentile(0.99) * 1000,
            "latency_p999": load.percentile(0.999) * 1000,
            "retransmissions": load.retransmissions,
            "failed": load.failed,
            "missing": missing,
            "freshness_p50": "n/a (no balance)",
            "freshness_p99": "n/a (no balance)",
            "replay_rate": not_applicable,
            "billing_small": "n/a (no billing)",
            "billing_large": "n/a (no billing)",
            "invoice_pdfs": "n/a (no invoices)",
            "bytes_per_record": (size_after - size_before) / max(1, load.acknowledged),
            "events_per_record": "n/a (one row per session, updated in place)",
            "rss_server": rss,
            "rss_other": rss_pg,
        }


def _wait_ready(process: subprocess.Popen[bytes], log_path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode(errors="replace") if process.stderr else ""
            log = log_path.read_text(errors="replace") if log_path.exists() else ""
            raise RuntimeError(f"freeradius exited with {process.returncode}:\n{err[-2000:]}\n{log[-3000:]}")
        if log_path.exists() and "Ready to process requests" in log_path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise RuntimeError(f"freeradius did not become ready in {timeout} s (see {log_path})")


def _radacct_size(database: str) -> int:
    with psycopg.connect(_dsn_for(database)) as conn:
        row = conn.execute("SELECT pg_total_relation_size('radacct')").fetchone()
    return int(row[0]) if row else 0


def _postgres_backends_rss(database: str) -> float:
    """Peak RSS of the largest PostgreSQL backend serving FreeRADIUS's SQL pool (RSS counts
    the shared buffers each backend touched, so a sum would count them many times)."""
    with psycopg.connect(_dsn_for(database)) as conn:
        pids = [r[0] for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,)).fetchall()]
    largest = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):  # the backend may have exited
            largest = max(largest, peak_rss_mib(pid))
    return largest


def verify(database: str, tag: str, load: LoadResult) -> int:
    """Acknowledged records missing from radacct: sessions with no row, plus sessions whose
    stored counters or stop time fall short of what was acknowledged."""
    with psycopg.connect(_dsn_for(database)) as conn:
        rows = conn.execute(
            "SELECT acctsessionid, acctinputoctets, acctoutputoctets, acctstoptime IS NOT NULL FROM radacct "
            "WHERE acctsessionid LIKE %s", (f"{tag}-%",)).fetchall()
    stored = {sid: (up or 0, down or 0, stopped) for sid, up, down, stopped in rows}
    missing = 0
    for packet in load.last_acked.values():
        got = stored.get(str(packet.attributes["Acct-Session-Id"]))
        if got is None:
            missing += 1
            continue
        up, down, stopped = got
        if up < packet.upload or down < packet.download or (packet.status == "Stop" and not stopped):
            missing += 1
    return missing


def write_config(home: Path, port: int, secret: str, db: object) -> Path:
    """A complete raddb directory for one listener on 127.0.0.1:``port``."""
    from urllib.parse import SplitResult

    assert isinstance(db, SplitResult)
    raddb = home / "raddb"
    for sub in ("mods-enabled", "sites-enabled", "run", "log"):
        (raddb / sub).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(STOCK / "dictionary", raddb / "dictionary")
    # rlm_expr provides %{tolower:...}, which the stock queries.conf uses.
    shutil.copyfile(STOCK / "mods-available" / "expr", raddb / "mods-enabled" / "expr")
    (raddb / "radiusd.conf").write_text(f"""# Written by bench/freeradius.py: stock values, paths under this directory.
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
logdir = {raddb}/log
raddbdir = {raddb}
radacctdir = ${{logdir}}/radacct
name = freeradius
confdir = ${{raddbdir}}
modconfdir = {STOCK}/mods-config
certdir = {STOCK}/certs
cadir = {STOCK}/certs
run_dir = {raddb}/run
db_dir = ${{raddbdir}}
libdir = /usr/lib/freeradius
pidfile = ${{run_dir}}/${{name}}.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 16384
hostname_lookups = no
log {{
    destination = files
    colourise = no
    file = ${{logdir}}/radius.log
    stripped_names = no
    auth = no
}}
security {{
    allow_core_dumps = no
    max_attributes = 200
    reject_delay = 1
    status_server = yes
}}
proxy_requests = no
$INCLUDE clients.conf
thread pool {{
    start_servers = 5
    max_servers = 32
    min_spare_servers = 3
    max_spare_servers = 10
    max_requests_per_server = 0
    auto_limit_acct = no
}}
modules {{
    $INCLUDE mods-enabled/
}}
instantiate {{
}}
policy {{
    $INCLUDE {STOCK}/policy.d/
}}
$INCLUDE sites-enabled/
""")
    (raddb / "clients.conf").write_text(f"""client bench {{
    ipaddr = 127.0.0.1
    secret = {secret}
    require_message_authenticator = no
    nas_type = other
}}
""")
    (raddb / "mods-enabled" / "sql").write_text(f"""sql {{
    dialect = "postgresql"
    driver = "rlm_sql_postgresql"
    postgresql {{
        send_application_name = yes
    }}
    server = "{db.hostname}"
    port = {db.port or 5432}
    login = "{db.username}"
    password = "{db.password}"
    radius_db = "{db.path.lstrip('/')}"
    acct_table1 = "radacct"
    acct_table2 = "radacct"
    postauth_table = "radpostauth"
    authcheck_table = "radcheck"
    groupcheck_table = "radgroupcheck"
    authreply_table = "radreply"
    groupreply_table = "radgroupreply"
    usergroup_table = "radusergroup"
    delete_stale_sessions = yes
    pool {{
        start = ${{thread[pool].start_servers}}
        min = ${{thread[pool].min_spare_servers}}
        max = ${{thread[pool].max_servers}}
        spare = ${{thread[pool].max_spare_servers}}
        uses = 0
        retry_delay = 30
        lifetime = 0
        idle_timeout = 60
    }}
    read_clients = no
    client_table = "nas"
    group_attribute = "SQL-Group"
    $INCLUDE ${{modconfdir}}/${{.:name}}/main/${{dialect}}/queries.conf
}}
""")
    (raddb / "sites-enabled" / "bench").write_text(f"""server bench {{
    listen {{
        type = acct
        ipaddr = 127.0.0.1
        port = {port}
    }}
    preacct {{
        acct_unique
    }}
    accounting {{
        sql
    }}
}}
""")
    return raddb
