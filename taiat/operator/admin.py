"""`taiat supervisors`, `taiat agents`, `taiat limits`, `taiat cleanup` and `taiat init`."""

from __future__ import annotations

from typing import Any

from taiat.cli.exits import EXIT_OK
from taiat.cli.init_command import init_main
from taiat.errors import InvalidLimit
from taiat.job_manager import JobManager
from taiat.operator import render
from taiat.operator.options import lease, manager, number
from taiat.store.validation import parse_rate, rate_text
from taiat.supervisor.liveness import alive


def supervisor_rows(jm: JobManager, lease_seconds: float) -> list[dict[str, Any]]:
    """Every registered supervisor, with `alive` judged by its own lease, or `lease_seconds`
    for one that registered none."""
    found = jm.port.list_workers()
    for worker in found:
        worker["alive"] = alive(worker, lease_seconds)
    return found


def supervisors_command(args: dict) -> int:
    lease_seconds = lease(args)
    found = supervisor_rows(manager(args), lease_seconds)
    if args["--json"]:
        render.print_json(found)
        return EXIT_OK
    out = render.console()
    if not found:
        render.show(out, "no supervisor is registered")
        return EXIT_OK
    columns = ("ID", "HOST", "PID", "STATE", "STARTED (UTC)", "HEARTBEAT", "RUNNING")
    rows = (
        (
            worker["id"],
            worker["host"],
            worker["pid"],
            render.Text("alive", "green") if worker["alive"] else render.Text("dead", "red"),
            render.when(worker["started_at"]),
            f"{render.duration(worker['heartbeat_age'])} ago",
            " ".join(worker["running_jobs"]) or "-",
        )
        for worker in found
    )
    render.print_rows(out, columns, rows)
    return EXIT_OK


def agents_command(args: dict) -> int:
    """Each agent of the live fleet's catalogue: its inputs and outputs, its queue (that of
    its planned jobs; `-`: the query's), and the live supervisors that serve it."""
    found = manager(args).list_agents(lease(args))
    if args["--json"]:
        render.print_json(found)
        return EXIT_OK
    out = render.console()
    if not found:
        render.show(out, "no live supervisor publishes an agent")
        return EXIT_OK
    columns = ("AGENT", "INPUTS", "OUTPUTS", "QUEUE", "SUPERVISORS")
    rows = (
        (
            agent["name"],
            ", ".join(agent["inputs"]) or "-",
            ", ".join(agent["outputs"]) or "-",
            agent["queue"] or "-",
            " ".join(agent["supervisors"]),
        )
        for agent in found
    )
    render.print_rows(out, columns, rows)
    return EXIT_OK


def limits_set_command(args: dict) -> int:
    key, cap, rate = args["KEY"], args["CAP"], args["--rate"]
    if cap is not None:
        try:
            cap = int(cap)
        except ValueError:
            raise InvalidLimit(
                f"invalid concurrency {cap!r}: give a whole number of jobs, 0 or more"
            ) from None
    manager(args).set_limit(key, concurrency=cap, rate=rate)
    per = parse_rate(rate)
    said = [f"at most {cap} running at once"] if cap is not None else []
    said += [f"at most {rate_text(*per)} started"] if per is not None else []
    print(f"limit on {key}: {', '.join(said)}")
    return EXIT_OK


def limits_list_command(args: dict) -> int:
    found = manager(args).list_limits()
    if args["--json"]:
        render.print_json(found)
        return EXIT_OK
    out = render.console()
    if not found:
        render.show(out, "no limit is set")
        return EXIT_OK
    columns = ("KEY", "CAP", "RATE", "RUNNING", "WAITING")
    rows = (
        (
            limit["key"],
            "-" if limit["concurrency"] is None else limit["concurrency"],
            limit["rate"] or "-",
            limit["running"],
            limit["waiting"],
        )
        for limit in found
    )
    render.print_rows(out, columns, rows)
    return EXIT_OK


def limits_clear_command(args: dict) -> int:
    key = args["KEY"]
    if manager(args).clear_limit(key):
        print(f"limit on {key} cleared")
    else:
        print(f"no limit on {key}: nothing to clear")
    return EXIT_OK


def cleanup_command(args: dict) -> int:
    days = number(args, "--days", float, None, 0)
    deleted = manager(args).cleanup_old_history(days)
    print(f"deleted {deleted} history entries completed more than {days:g} days ago")
    return EXIT_OK


def init_command(args: dict) -> int:
    url = args["--database-url"]
    return init_main(["--database-url", url] if url else [])
