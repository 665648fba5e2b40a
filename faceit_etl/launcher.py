"""Which process started a run, whether it is gone, and a dead process's end in words.

A run the CLI or the API starts is driven by that process alone (`execute_job`, `execute_in_process`):
killed, it leaves the run STARTED in the instance for ever, and the run queue counts it. So each such
run is tagged with its process (host, pid, and when that process started, so that a reused pid is
not taken for it), and the next command judges the runs whose process is gone.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Mapping
from pathlib import Path

HOST_TAG = "faceit_etl/host"
PID_TAG = "faceit_etl/pid"
PROCESS_START_TAG = "faceit_etl/process_start"  # `<boot id>:<start time in clock ticks>`, from /proc
LAUNCHER_TAGS = (HOST_TAG, PID_TAG, PROCESS_START_TAG)
_ALIVE_UNKNOWN_START = "alive, start unknown"


def process_start(pid: int) -> str | None:
    """When the process `pid` started (`<boot id>:<ticks>`), None when no process has it (a zombie, killed
    and not yet reaped, has none either). A process this one may not read (another user's, /proc mounted
    with hidepid) is alive, its start unknown."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return _ALIVE_UNKNOWN_START
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return _ALIVE_UNKNOWN_START
    fields = stat.rsplit(")", 1)[1].split()  # the command name, in brackets, may hold spaces
    if fields[0] in ("Z", "X"):  # state: dead, only its exit status left
        return None
    return f"{boot}:{fields[19]}"  # field 22 of proc(5), the third after the name


def alive_since(pid: int, moment: float) -> bool:
    """Whether the process `pid` lives and started by `moment` (seconds since the epoch): the process that
    logged an event then, not a later one that took its freed pid. Unknown start: alive."""
    start = process_start(pid)
    if start is None or start == _ALIVE_UNKNOWN_START:
        return start is not None
    try:
        stat = Path("/proc/stat").read_text().splitlines()
        boot = next(int(line.split()[1]) for line in stat if line.startswith("btime "))
    except (OSError, StopIteration):
        return True
    started = boot + int(start.rsplit(":", 1)[1]) / os.sysconf("SC_CLK_TCK")
    return started <= moment + 1  # the boot time is in whole seconds


def launcher_tags() -> dict[str, str]:
    """This process, as the runs it starts are tagged; nothing where /proc cannot say when it started
    (its runs are then never judged gone)."""
    start = process_start(os.getpid())
    if start is None or start == _ALIVE_UNKNOWN_START:
        return {}
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), PROCESS_START_TAG: start}


def launcher_gone(tags: Mapping[str, str]) -> bool:
    """Whether the process that started a run is gone: it ran on this host, and its pid is free or now
    another process's. A run without these tags (launched by the UI or the daemon, whose business it
    is) or started on another host is never judged gone."""
    if any(tag not in tags for tag in LAUNCHER_TAGS) or tags[HOST_TAG] != socket.gethostname():
        return False
    if not tags[PID_TAG].isdigit():
        return False
    start = process_start(int(tags[PID_TAG]))
    return start != _ALIVE_UNKNOWN_START and start != tags[PROCESS_START_TAG]


def launcher_gone_before_commit(tags: Mapping[str, str]) -> str:
    """Why a step process rolls its load back when the process that launched its run is gone: nobody
    follows the run any more, and `status` may already have reported it failed with nothing written."""
    return (f"the faceit-etl process (pid {tags[PID_TAG]} on host {tags[HOST_TAG]}) that launched this run ended "
            "before the load's commit (killed?), so its step process rolled the load back instead of committing it")


def abandoned_message(tags: Mapping[str, str], job: str, committed: bool) -> str:
    """Why a run whose process is gone is marked failed, and what became of its target: a load and a
    restore are each one transaction, so the tables hold all of it (`committed`) or none."""
    ended = (f"the faceit-etl process (pid {tags[PID_TAG]} on host {tags[HOST_TAG]}) that ran it ended "
             "without finishing it (killed?)")
    work = "restore" if job == "rollback_job" else "load"
    if committed:
        return f"{ended}; its {work} had committed before that: the tables hold it"
    return f"{ended}; the target was left as it was (the {work} is one transaction)"


def how_it_ended(exit_code: int | None) -> str:
    """A process's end in words: its signal (negative, as subprocess and multiprocessing give it) or exit code."""
    if exit_code is None:
        return "its exit status is unknown"
    if exit_code < 0:
        try:
            name = f" ({signal.Signals(-exit_code).name})"
        except ValueError:
            name = ""
        why = ": by hand, or by the system when memory ran out" if -exit_code == signal.SIGKILL else ""
        return f"killed by signal {-exit_code}{name}{why}"
    return f"exit code {exit_code}"


def step_process_ended(step: str, exit_code: int | None, *, committed: bool, dry_run: bool, load_started: bool = True) -> str:
    """Why a run failed when one of its step processes died (`max_concurrent` above 1), what became of the
    target and what to do: Dagster says only `ChildProcessCrashException`. `--resume` is offered only for a
    run whose load started: it refuses any other (resumption.choose)."""
    ended = f"step {step}: its process ended without finishing ({how_it_ended(exit_code)})"
    if committed:
        return f"{ended}; its load had committed before that: the tables hold it (faceit-etl status shows it)"
    if dry_run:
        return f"{ended}; nothing was written. Run the dry run again (a dry run is never resumed)"
    if not load_started:
        return (f"{ended}; nothing was written (its load had not started). Run the migration again (faceit-etl "
                "migrate): a run stopped before its load is not resumed")
    return (f"{ended}; nothing was written (the load had not committed). Run the migration again, or resume "
            "it from this step (faceit-etl migrate --resume: the steps before it are not run again)")


def verb_process_ended(verb: str, pid: int, exit_code: int | None) -> str:
    """Why an API call that ran its verb in a process of its own (another `database_url`, an unguarded
    `__main__`) has no answer: that process died. Its run, if it started one, is marked failed meanwhile."""
    return (f"faceit-etl {verb}: the process that ran it (pid {pid}) ended without finishing it "
            f"({how_it_ended(exit_code)}); its run, if it had started one, is marked failed, and nothing it had "
            "not committed was written (a load and a restore are one transaction each): faceit-etl status says "
            "what the tables hold. Run it again, or resume the failed migration (faceit-etl migrate --resume)")
