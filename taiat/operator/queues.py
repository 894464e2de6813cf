"""`taiat queues list|pause|resume`: each queue's jobs, pause state and supervisors; pausing
and resuming one."""

from __future__ import annotations

from taiat.cli.exits import EXIT_OK
from taiat.jobs import QueueInfo
from taiat.operator import render
from taiat.operator.options import lease, manager


def unserved_text(agent: str) -> str:
    """Why a pending agent job waits for ever, until a supervisor with its agent comes."""
    return f"no live supervisor serves agent {agent}"


def list_command(args: dict) -> int:
    found = manager(args).list_queues(lease=lease(args))
    if args["--json"]:
        render.print_json(
            [
                {**render.record(queue), "notes": [unserved_text(a) for a in queue.unserved_agents]}
                for queue in found
            ]
        )
        return EXIT_OK
    out = render.console()
    if not found:
        render.show(out, "no queue has jobs, and none is paused")
        return EXIT_OK
    columns = ("QUEUE", "PENDING", "READY", "RUNNING", "STATE", "SUPERVISORS", "NOTE")
    render.print_rows(out, columns, (_row(queue) for queue in found))
    return EXIT_OK


def _row(queue: QueueInfo) -> tuple[object, ...]:
    state = render.Text("paused", "yellow") if queue.paused else "active"
    notes = "; ".join(unserved_text(agent) for agent in queue.unserved_agents)
    return (
        queue.name,
        str(queue.pending),
        str(queue.ready),
        str(queue.running),
        state,
        " ".join(queue.supervisors) or "-",
        notes or "-",
    )


def pause_command(args: dict) -> int:
    name = args["NAME"]
    manager(args).pause_queue(name)
    print(f"queue {name} paused: no supervisor starts its jobs until `taiat queues resume {name}`")
    return EXIT_OK


def resume_command(args: dict) -> int:
    name = args["NAME"]
    if manager(args).resume_queue(name):
        print(f"queue {name} resumed")
    else:
        print(f"queue {name} was not paused")
    return EXIT_OK
