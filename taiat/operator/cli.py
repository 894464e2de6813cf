"""Operate the Taiat job manager from a terminal: find, show, create, cancel and retry jobs,
see where a running job is (its stack), read what they wrote, draw the dependency graph
around a job, pause and resume queues, and watch supervisors and queues live.

Usage:
  taiat jobs list [--status S] [--ready] [--name NAME] [--queue Q] [--limit N] [--json]
                  [--database-url URL]
  taiat jobs show ID [--lease S] [--json] [--database-url URL]
  taiat jobs logs ID [--attempt N] [--follow | --json] [--database-url URL]
  taiat jobs create --type TYPE --name NAME [--description TEXT]
                    [--payload JSON | --payload-file FILE] [--depends-on ID]...
                    [--max-retries N] [--priority P] [--timeout S] [--run-at TIME]
                    [--queue Q] [--database-url URL]
  taiat jobs create --file FILE [--json] [--database-url URL]
  taiat jobs cancel ID [--database-url URL]
  taiat jobs retry ID [--database-url URL]
  taiat jobs stack ID [--timeout S] [--database-url URL]
  taiat queues list [--lease S] [--json] [--database-url URL]
  taiat queues pause NAME [--database-url URL]
  taiat queues resume NAME [--database-url URL]
  taiat history [--limit N] [--status S] [--json] [--database-url URL]
  taiat cleanup --days N [--database-url URL]
  taiat supervisors [--lease S] [--json] [--database-url URL]
  taiat agents [--lease S] [--json] [--database-url URL]
  taiat limits set KEY [CAP] [--rate R] [--database-url URL]
  taiat limits list [--json] [--database-url URL]
  taiat limits clear KEY [--database-url URL]
  taiat graph ID [--format F | --json] [-o FILE] [--database-url URL]
  taiat top [--interval S] [--status-file PATH]... [--lease S] [--once] [--json]
            [--database-url URL]
  taiat wait ID... [--timeout S] [--interval S] [--database-url URL]
  taiat init [--database-url URL]
  taiat (-h | --help)
  taiat --version

ID is a job's id, or its first 6 or more characters if no other job's id begins with them.
KEY is a limit key: `queue:NAME`, `agent:NAME`, or a job's explicit key (1-128 letters,
digits, _ . - : /); CAP caps that key's jobs running at once over the whole fleet.
NAME is a queue's name.

Options:
  --database-url URL   The database (else TAIAT_DATABASE_URL, else the embedded ./taiat.db,
                       or $TAIAT_HOME/taiat.db, which only `taiat init` creates).
  --status S           pending, running, completed, failed or cancelled.
  --ready              Only jobs that can start now (pending, dependencies completed, run_at
                       passed), in the order supervisors claim them.
  --limit N            At most N rows (jobs list: 100; history: 10).
  --json               JSON for scripts instead of a table (graph: --format json; jobs create
                       --file: an object of the new ids by the file's keys).
  --type TYPE          agent or query.
  --name NAME          jobs create: the job's name; jobs list: only jobs whose name matches
                       NAME, a shell-style pattern (* and ?), any case.
  --description TEXT   The job's description.
  --payload JSON       The job's payload, a JSON object (default {}).
  --payload-file FILE  Read the payload from FILE (- for standard input).
  --depends-on ID      Run only once job ID has completed (repeatable).
  --file FILE          Create a whole dependency graph in one go from FILE (- for standard
                       input): a JSON list of jobs, each an object of create_job's keywords
                       (job_type, name, payload, dependencies, run_at...) with an optional
                       "id" that other jobs' "dependencies" name; prints each new id after
                       the file's key for its job (its "id", or #N, its place from 0).
  --queue Q            jobs create: the job's queue (default "default"), 1-64 letters,
                       digits, _ . or -; only supervisors serving it run it. jobs list: only
                       jobs of queue Q.
  --max-retries N      Attempts after the first that may fail (default 3).
  --priority P         Higher runs first (default 0).
  --timeout S          jobs create: seconds the job may run (else the supervisor's default);
                       wait: seconds to wait before giving up (exit 75); jobs stack:
                       seconds to wait for the stack (default 10).
  --run-at TIME        Not before TIME: ISO 8601 (naive means UTC) or +N[s|m|h|d] from now.
  --days N             Delete history entries completed more than N days ago.
  --lease S            A supervisor whose heartbeat is older is shown dead (and its agents
                       not counted; queues list: not counted as serving), unless it registered
                       a lease of its own (TAIAT_LEASE; default 30).
  --rate R             limits set: at most R starts of the key's jobs per period over the
                       whole fleet, in any window of the period: 60/min, 10/s, 100/h (/s is
                       one a second); with or without CAP.
  --format F           text (an indented tree), dot, svg, png (through Graphviz) or json;
                       default text, or the extension of --output.
  -o FILE --output FILE  Write the graph to FILE rather than standard output.
  --interval S         Seconds between refreshes (top: 1; wait: 0.5).
  --attempt N          jobs logs: only attempt N (the # of `jobs show`); default every one.
  --follow             jobs logs: print the running attempt's output as it grows (a few
                       seconds behind), until that attempt ends; for a pending job, the next
                       attempt's.
  --status-file PATH   A supervisor's status file, for CPU and memory of its running jobs
                       (repeatable; else TAIAT_STATUS_FILE).
  --once               Print the view once and exit (what top does off a terminal).
  --version            Print the version.
  -h --help            Show this help.

Exit codes: 0 done; 1 the request cannot be carried out (e.g. retry a completed job), or a
waited-for job failed; 3 a waited-for job was cancelled (and none failed); 64 bad command line
or input; 65 tables missing or of another version; 66 no job has that id; 69 database
unreachable, or Graphviz not installed; 75 wait timed out; 78 a bad setting, or no database
chosen and no embedded one to use.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from collections.abc import Callable, Sequence

from docopt import DocoptExit, docopt

from taiat.cli import common, exits
from taiat.errors import (
    AmbiguousJobId,
    DuplicateJob,
    InvalidDependency,
    InvalidJob,
    InvalidLimit,
    JobNotFound,
    TaiatError,
    Unavailable,
    UsageError,
)
from taiat.operator import usage
from taiat.operator.options import error
from taiat.store import db


def exit_code_for(error: TaiatError) -> int:
    if isinstance(error, JobNotFound):
        return exits.EXIT_NOT_FOUND
    if isinstance(
        error,
        UsageError | InvalidJob | InvalidDependency | DuplicateJob | AmbiguousJobId | InvalidLimit,
    ):
        return exits.EXIT_USAGE
    if isinstance(error, Unavailable):
        return exits.EXIT_DB_UNAVAILABLE
    return common.exit_code_for(error)


# -- dispatch ------------------------------------------------------------------------------


def _command(args: dict) -> Callable[[dict], int]:
    from taiat.operator import admin, graph, job_commands, logs, queues, top, waiting

    if args["queues"]:
        for name in ("list", "pause", "resume"):
            if args[name]:
                return getattr(queues, f"{name}_command")

    if args["jobs"]:
        if args["logs"]:
            return logs.logs_command
        for name in ("list", "show", "create", "cancel", "retry", "stack"):
            if args[name]:
                return getattr(job_commands, f"{name}_command")
    if args["limits"]:
        for name in ("set", "list", "clear"):
            if args[name]:
                return getattr(admin, f"limits_{name}_command")
    table: dict[str, Callable[[dict], int]] = {
        "history": job_commands.history_command,
        "cleanup": admin.cleanup_command,
        "supervisors": admin.supervisors_command,
        "agents": admin.agents_command,
        "init": admin.init_command,
        "graph": graph.graph_command,
        "top": top.top_command,
        "wait": waiting.wait_command,
    }
    for name, command in table.items():
        if args[name]:
            return command
    raise AssertionError(f"no command in {args}")


def main(argv: Sequence[str] | None = None) -> int:
    from taiat import __version__

    words = list(sys.argv[1:] if argv is None else argv)
    doc = __doc__ or ""
    own_help = usage.help_for(doc, words)
    if own_help is not None:
        print(own_help, end="")
        return exits.EXIT_OK
    try:
        args = docopt(doc, argv=words, version=__version__)
    except DocoptExit:
        wrong = usage.problem(doc, words)
        if wrong is None:
            echo = shlex.join(["taiat", *(db.mask_url(word) for word in words)])
            named = " ".join(["taiat", usage.command_of(doc, words)]).strip()
            wrong = f"bad command line `{echo}`: see `{named} --help`"
        error(wrong)
        return exits.EXIT_USAGE
    logging.basicConfig(level=common.quiet_log_level())
    try:
        return _command(args)(args)
    except TaiatError as exc:
        error(str(exc))
        return exit_code_for(exc)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `taiat jobs list | head`: the reader has what it wanted.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return exits.EXIT_OK
