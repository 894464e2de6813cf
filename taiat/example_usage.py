"""`python -m taiat.example_usage`: enqueue a small example DAG of built-in agents.

    generate_a ─┐
                ├─> summarise ─┐
    generate_b ─┤              ├─> report
                └─> histogram ─┘

With `--run`, also run a supervisor in burst mode until the DAG is done and print the results.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence

from taiat.cli import fail, parse, setup_logging
from taiat.errors import TaiatError
from taiat.job_manager import JobManager, JobType

USAGE = """Enqueue the example DAG (python -m taiat.example_usage).

Usage:
  taiat.example_usage [--database-url URL] [--run]
  taiat.example_usage (-h | --help)

Options:
  --database-url URL  The database (else TAIAT_DATABASE_URL, else ./taiat.db).
  --run               Initialise the database if needed, run the jobs, print what happened.
  -h --help           Show this help.
"""


def example_dag() -> list[dict]:
    def agent(key: str, agent_name: str, deps: list[str], **parameters: object) -> dict:
        return {
            "id": None,
            "job_type": JobType.AGENT,
            "name": key,
            "payload": {"agent_name": agent_name, "parameters": parameters},
            "dependencies": deps,
        }

    return [
        agent("generate_a", "example_generate", [], count=50, seed=1),
        agent("generate_b", "example_generate", [], count=50, seed=2),
        agent("summarise", "example_summarise", ["generate_a", "generate_b"]),
        agent("histogram", "example_histogram", ["generate_a", "generate_b"], bins=4),
        agent("report", "example_report", ["summarise", "histogram"]),
    ]


def enqueue(manager: JobManager) -> list:
    """Create the DAG with fresh ids (so it can be enqueued again) and return the jobs."""
    import uuid

    suffix = uuid.uuid4().hex[:8]
    specs = example_dag()
    for spec in specs:
        spec["id"] = f"{spec['name']}-{suffix}"
        spec["dependencies"] = [f"{dep}-{suffix}" for dep in spec["dependencies"]]
    return manager.create_jobs(specs)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(USAGE, argv)
    setup_logging("INFO" if args["--run"] else "WARNING")
    try:
        if args["--run"]:
            from taiat import db, schema

            schema.initialise(db.engine_from_url(args["--database-url"]))
        manager = JobManager(args["--database-url"])
        jobs = enqueue(manager)
        for job in jobs:
            deps = ", ".join(job.dependencies) or "-"
            print(f"enqueued {job.id}  ({job.payload['agent_name']}; after: {deps})")
        if not args["--run"]:
            print("now run a supervisor: taiat-supervisor (or python -m taiat.run_worker)")
            return 0
        from taiat.supervisor import Supervisor, SupervisorConfig

        config = SupervisorConfig(
            database_url=args["--database-url"], burst=True, poll_interval=0.5
        )
        Supervisor(config, manager=manager).run()
        logging.shutdown()
        finished = [manager.get_job(job.id) or job for job in jobs]
        for done in finished:
            print(f"{done.status.value:<9} {done.name}: {json.dumps(done.result)[:160]}")
        return 0 if all(done.status.value == "completed" for done in finished) else 1
    except TaiatError as error:
        return fail(error)


if __name__ == "__main__":
    sys.exit(main())
