"""`taiat graph ID`: the dependency graph around a job (its ancestors and descendants), as an
indented tree, Graphviz dot, SVG or PNG (through Graphviz's `dot`), or JSON."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.text import Text
from rich.tree import Tree

from taiat.cli.exits import EXIT_OK
from taiat.errors import JobNotFound, Unavailable, UsageError
from taiat.jobs import Job
from taiat.operator import lookups, render
from taiat.operator.lookups import Graph
from taiat.operator.options import job_id, manager

FORMATS = ("text", "dot", "svg", "png", "json")
_BY_EXTENSION = {".txt": "text", ".dot": "dot", ".gv": "dot", ".svg": "svg", ".png": "png"}
_BY_EXTENSION[".json"] = "json"

#: Fill colours of the picture, one per status: light enough for black text.
FILL = {
    "pending": "#fff2b3",
    "running": "#b3dcff",
    "completed": "#bfe8b5",
    "failed": "#f5b0b0",
    "cancelled": "#ddd0ea",
}


def graph_command(args: dict) -> int:
    output = args["--output"]
    fmt = "json" if args.get("--json") else _format(args["--format"], output)
    if fmt == "png" and output is None and sys.stdout.isatty():
        raise UsageError("a PNG is binary: write it to a file with --output FILE")
    if fmt in ("svg", "png") and shutil.which("dot") is None:
        raise Unavailable(
            "Graphviz is not installed (no `dot` on PATH): install it (Debian: apt-get install "
            "graphviz), or use --format text or --format dot"
        )
    wanted = job_id(args)
    graph = lookups.graph_around(manager(args), wanted)
    if graph is None:
        raise JobNotFound(f"no job has id {wanted}")
    if fmt == "text":
        return _write_text(graph, output)
    if fmt == "json":
        data = graph_record(graph)
        if output is None:
            render.print_json(data)
        else:
            with open(output, "w") as file:
                render.print_json(data, file)
        return EXIT_OK
    source = to_dot(graph)
    content = source.encode() if fmt == "dot" else run_dot(source, fmt)
    if output is None:
        sys.stdout.buffer.write(content)
        sys.stdout.flush()
    else:
        Path(output).write_bytes(content)
    return EXIT_OK


def _format(given: str | None, output: str | None) -> str:
    if given is not None:
        if given.lower() not in FORMATS:
            raise UsageError(f"unknown format {given!r}: use one of {', '.join(FORMATS)}")
        return given.lower()
    if output is not None:
        return _BY_EXTENSION.get(Path(output).suffix.lower(), "text")
    return "text"


def run_dot(source: str, fmt: str) -> bytes:
    """The graph drawn by Graphviz's `dot` in `fmt` (svg or png)."""
    try:
        done = subprocess.run(
            ["dot", f"-T{fmt}"], input=source.encode(), capture_output=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"Graphviz's dot did not run: {exc}") from None
    if done.returncode != 0:
        problem = done.stderr.decode(errors="replace").strip().splitlines()
        raise Unavailable(f"Graphviz's dot failed: {problem[0] if problem else done.returncode}")
    return done.stdout


# -- the pieces of every form --------------------------------------------------------------


def _took(graph: Graph, job: Job) -> float | None:
    """How long the job ran, by the same measure as `taiat history` (`render.took`)."""
    return render.took(job, graph.attempts.get(job.id, ()), graph.now)


def label(job: Job, graph: Graph) -> str:
    """'name · status · 2.1 s' (the time the job ran, or has been running)."""
    parts = [job.name, job.status.value]
    seconds = _took(graph, job)
    if seconds is not None:
        parts.append(render.duration(seconds))
    return " · ".join(parts)


def graph_record(graph: Graph) -> dict[str, Any]:
    return {
        "root": graph.root,
        "jobs": [
            {
                "id": job.id,
                "name": job.name,
                "status": job.status.value,
                "seconds": _took(graph, job),
            }
            for job in sorted(graph.jobs.values(), key=lambda j: j.id)
        ],
        "edges": [{"dependency": a, "dependent": b} for a, b in sorted(graph.edges)],
        "missing": sorted(graph.missing),
        "truncated": graph.truncated,
    }


# -- text: two indented trees --------------------------------------------------------------


def _node(graph: Graph, job_id: str) -> Text:
    job = graph.jobs.get(job_id)
    if job is None:
        return Text.assemble((job_id, "bold"), ("  gone from history", "dim"))
    style = render.STATUS_STYLES.get(job.status.value, "")
    text = Text.assemble((job.name, "bold"), "  ", (job.id, "dim"), "  ")
    text.append(job.status.value, style=style)
    seconds = _took(graph, job)
    if seconds is not None:
        text.append(f"  {render.duration(seconds)}")
    return text


def text_tree(graph: Graph) -> Tree:
    """The job, then what it depends on (ancestors) and what depends on it (descendants),
    each as an indented tree; a job met again is named, not expanded again."""
    top = Tree(_node(graph, graph.root))
    for title, step in (
        ("depends on", graph.dependencies),
        ("needed by", graph.dependents),
    ):
        branch = top.add(Text(title, style="italic"))
        seen = {graph.root}
        _grow(branch, graph, graph.root, step, seen)
        if not branch.children:
            branch.add(Text("nothing", style="dim"))
    if graph.truncated:
        top.add(Text(f"(cut at {lookups.MAX_GRAPH_NODES} jobs)", style="dim"))
    return top


def _grow(branch: Tree, graph: Graph, job_id: str, step: Any, seen: set[str]) -> None:
    for other in step(job_id):
        if other in seen:
            branch.add(_node(graph, other).append("  (above)", style="dim"))
            continue
        seen.add(other)
        _grow(branch.add(_node(graph, other)), graph, other, step, seen)


def _write_text(graph: Graph, output: str | None) -> int:
    if output is None:
        render.show(render.console(), text_tree(graph))
        return EXIT_OK
    with open(output, "w") as file:
        render.show(render.console(file), text_tree(graph))
    return EXIT_OK


# -- dot -----------------------------------------------------------------------------------


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(graph: Graph) -> str:
    """Graphviz source: dependencies point at their dependents, left to right; each job a box
    filled with its status's colour, the job asked about drawn bold."""
    lines = [
        "digraph taiat {",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11];',
        '  edge [color="#555555"];',
    ]
    for job in sorted(graph.jobs.values(), key=lambda j: j.id):
        attrs = {
            "label": f"{job.name}\n{job.status.value}"
            + (f" · {render.duration(t)}" if (t := _took(graph, job)) else "")
            + f"\n{job.id[:8]}",
            "fillcolor": FILL.get(job.status.value, "white"),
            "tooltip": job.id,
        }
        extra = ", penwidth=3" if job.id == graph.root else ""
        joined = ", ".join(f"{key}={_quote(value)}" for key, value in attrs.items())
        lines.append(f"  {_quote(job.id)} [{joined}{extra}];")
    for missing in sorted(graph.missing):
        lines.append(
            f"  {_quote(missing)} [label={_quote(missing[:8] + chr(10) + 'gone')}, "
            'style="rounded,dashed", fillcolor=white];'
        )
    for dependency, dependent in sorted(graph.edges):
        lines.append(f"  {_quote(dependency)} -> {_quote(dependent)};")
    lines.append("}")
    return "\n".join(lines) + "\n"
