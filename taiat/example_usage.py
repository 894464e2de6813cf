"""`python -m taiat.example_usage`: enqueue a small example DAG of built-in agents,

    generate_a ─┐
                ├─> summarise ─┐
    generate_b ─┤              ├─> report
                └─> histogram ─┘

and a query job asking for `sample_report`, which the planner turns into the same shape of
work from the example agents' declared inputs and outputs:

    example_sample ─┬─> example_describe ─┐
                    └─> example_bins ─────┴─> example_write_report

With `--run`, also run a supervisor in burst mode until all is done and print the results.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from taiat.agents.planner import plan
from taiat.agents.registry import default_agents
from taiat.cli.common import fail, parse, setup_logging
from taiat.config import from_environment
from taiat.errors import TaiatError
from taiat.job_manager import Job, JobManager, JobType

USAGE = """Enqueue the example DAG (python -m taiat.example_usage).

Usage:
  taiat.example_usage [--database-url URL] [--run]
  taiat.example_usage (-h | --help)

Options:
  --database-url URL  The database (else TAIAT_DATABASE_URL, else ./taiat.db).
  --run               Initialise the database if needed, run the jobs, print what happened.
  -h --help           Show this help.

The query job asks for "sample_report" from the inputs count, seed and bins; the plan is
printed before it runs, and its agent jobs after.
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


#: The example query: its goal, and the inputs it gives.
GOAL = "sample_report"
INPUTS = {"count": 50, "seed": 1, "bins": 4}
QUERY: dict[str, Any] = {
    "query": "Describe a sample of 50 numbers: summary and histogram",
    "inferred_goal_output": GOAL,
    "inputs": INPUTS,
}


def enqueue_query(manager: JobManager) -> Job:
    """Create the example query job, and print the plan the planner will make for it."""
    # The agents a supervisor started here would plan with: the same agent config.
    agents = default_agents(agent_config=from_environment("TAIAT_AGENT_CONFIG"))
    found = plan(agents, GOAL, set(INPUTS))
    job = manager.create_job(JobType.QUERY, "sample report", payload=QUERY)
    print(f"enqueued {job.id}  (query for {GOAL}; planned as:)")
    for line in found.describe().splitlines():
        print(f"    {line}")
    return job


def print_query(manager: JobManager, job_id: str) -> bool:
    """The query's outcome and its plan's agent jobs; whether it completed."""
    done = manager.get_job(job_id)
    if done is None:
        return False
    print(
        f"{done.status.value:<9} query {done.name}: {json.dumps(done.result or done.error_message)}"
    )
    for step in done.payload.get("plan", []):
        agent_job = manager.get_job(step["job_id"])
        state = agent_job.status.value if agent_job else "?"
        after = ", ".join(step["after"]) or "-"
        print(f"    {state:<9} {step['agent']:<21} {step['job_id']}  after: {after}")
    return done.status.value == "completed"


#: How much of a result a line of the example's output shows.
RESULT_WIDTH = 160


def shortened(text: str, width: int = RESULT_WIDTH) -> str:
    """`text` whole if it fits in `width` characters, else cut to fit with an ellipsis."""
    return text if len(text) <= width else f"{text[: width - 1]}…"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(USAGE, argv)
    setup_logging("INFO" if args["--run"] else "WARNING")
    try:
        if args["--run"]:
            from taiat.store import db, schema

            schema.initialise(db.engine_from_url(args["--database-url"]))
        manager = JobManager(args["--database-url"])
        jobs = enqueue(manager)
        for job in jobs:
            deps = ", ".join(job.dependencies) or "-"
            print(f"enqueued {job.id}  ({job.payload['agent_name']}; after: {deps})")
        query_job = enqueue_query(manager)
        if not args["--run"]:
            print("now run a supervisor: taiat-supervisor (or python -m taiat.run_worker)")
            return 0
        from taiat.supervisor.daemon import Supervisor, SupervisorConfig

        config = SupervisorConfig(
            database_url=args["--database-url"], burst=True, poll_interval=0.5
        )
        Supervisor(config, manager=manager).run()
        logging.shutdown()
        finished = [manager.get_job(job.id) or job for job in jobs]
        for done in finished:
            print(f"{done.status.value:<9} {done.name}: {shortened(json.dumps(done.result))}")
        query_ok = print_query(manager, query_job.id)
        return 0 if query_ok and all(d.status.value == "completed" for d in finished) else 1
    except TaiatError as error:
        return fail(error)


if __name__ == "__main__":
    sys.exit(main())
