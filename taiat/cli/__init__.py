"""The command lines below the `taiat` command. What they share (`common`, the exit codes in
`exits`), the supervisor's (`supervisor_command`, with `--status` in `status_report`),
`init`'s (`init_command`), and the progress of a batch of jobs (`progress`).

The names of the one module this package was are still importable from it
(`from taiat.cli import supervisor_main`), imported when first used."""

from taiat.compat import lazy_names

_EXITS = "taiat.cli.exits"
_COMMON = "taiat.cli.common"
_SUPERVISOR = "taiat.cli.supervisor_command"

__getattr__, __dir__ = lazy_names(
    __name__,
    {
        "EXIT_CANCELLED": _EXITS,
        "EXIT_CONFIG": _EXITS,
        "EXIT_DB_SCHEMA": _EXITS,
        "EXIT_DB_UNAVAILABLE": _EXITS,
        "EXIT_FAILURE": _EXITS,
        "EXIT_NOT_FOUND": _EXITS,
        "EXIT_OK": _EXITS,
        "EXIT_TIMEOUT": _EXITS,
        "EXIT_USAGE": _EXITS,
        "exit_code_for": _COMMON,
        "fail": _COMMON,
        "parse": _COMMON,
        "quiet_log_level": _COMMON,
        "setup_logging": _COMMON,
        "INIT_USAGE": "taiat.cli.init_command",
        "init_main": "taiat.cli.init_command",
        "SUPERVISOR_USAGE": _SUPERVISOR,
        "setting": _SUPERVISOR,
        "supervisor_config": _SUPERVISOR,
        "supervisor_main": _SUPERVISOR,
    },
)
