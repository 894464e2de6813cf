"""`taiat wait ID...`: wait for jobs to finish, with their progress shown as they do."""

from __future__ import annotations

import time

from taiat.cli.exits import EXIT_CANCELLED, EXIT_FAILURE, EXIT_OK, EXIT_TIMEOUT
from taiat.cli.progress import ProgressDisplay
from taiat.errors import JobNotFound
from taiat.jobs import JobStatus
from taiat.operator import lookups
from taiat.operator.options import MAX_INTERVAL, error, identifiers, manager, number


def wait_command(args: dict) -> int:
    given = identifiers(args)
    timeout = number(args, "--timeout", float, None, 0)
    interval = number(args, "--interval", float, 0.5, 0.01, MAX_INTERVAL)
    jm = manager(args)
    ids = list(dict.fromkeys(lookups.resolve_id(jm, i, missing_ok=True) for i in given))
    jobs = lookups.jobs_by_id(jm, ids)
    unknown = [job_id for job_id in ids if job_id not in jobs]
    if unknown:
        raise JobNotFound(f"no job has id {', '.join(unknown)}")
    display = ProgressDisplay("wait", every=0)
    deadline = None if timeout is None else time.monotonic() + timeout
    reported: set[str] = set()
    try:
        while True:
            finished = {i: job for i, job in jobs.items() if job.status.finished}
            failed = sum(job.status == JobStatus.FAILED for job in finished.values())
            cancelled = sum(job.status == JobStatus.CANCELLED for job in finished.values())
            for job_id in ids:
                if job_id in finished and job_id not in reported and not display.on_terminal:
                    reported.add(job_id)
                    job = finished[job_id]
                    display.plain(f"wait: job {job_id} ({job.name}) {job.status.value}")
            display.update(len(finished), len(ids), failed, cancelled)
            if len(finished) == len(ids):
                break
            if deadline is not None and time.monotonic() >= deadline:
                display.close()
                left = [i for i in ids if i not in finished]
                error(f"timed out waiting for {len(left)} of {len(ids)} jobs: {' '.join(left)}")
                return EXIT_TIMEOUT
            time.sleep(
                interval
                if deadline is None
                else max(0.0, min(interval, deadline - time.monotonic()))
            )
            jobs = lookups.jobs_by_id(jm, ids)
    finally:
        display.close()
    for job_id in ids:
        print(f"{job_id}  {jobs[job_id].status.value}  {jobs[job_id].name}")
    if failed:
        return EXIT_FAILURE
    return EXIT_CANCELLED if cancelled else EXIT_OK
