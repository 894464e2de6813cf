"""Every exception of the job manager, under one root: a subclass per thing a caller can get
wrong, and those raised inside a job, by the fork server and by the `taiat` command."""

from __future__ import annotations


class TaiatError(Exception):
    """Taiat job manager error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(TaiatError):
    """Raised when a setting (URL, option, environment variable) is invalid."""


class InvalidDatabaseURL(ConfigurationError):
    """Raised when a database URL names a database the job manager cannot use."""


class DatabaseError(TaiatError):
    """Raised when the database cannot serve a request."""


class DatabaseUnavailable(DatabaseError):
    """Raised when the database cannot be reached: check the URL and that the server is running."""


class DatabaseRefused(DatabaseUnavailable, ConfigurationError):
    """Raised when the database server was reached but refused the connection because the
    database or the role the URL names does not exist: a bad setting, which restarting will not
    fix (the command lines exit 78, not 69). A running supervisor still waits it out as an
    outage (it is a DatabaseUnavailable): the database may be being restored."""


class TransientConflict(DatabaseError):
    """Raised when the database aborted a transaction for a deadlock or serialisation conflict;
    running it again is safe."""


class LockTimeout(TransientConflict):
    """Raised when a statement gave up waiting, for a lock or at all (`lock_timeout`,
    `statement_timeout`): another transaction held on too long. Running it again later is safe;
    running it again at once is likely to wait as long."""


class DatabaseNotInitialised(DatabaseError):
    """Raised when the tables are missing: run `python -m taiat.init_worker`."""


class SchemaVersionMismatch(DatabaseError):
    """Raised when the database schema is older or newer than this release."""


class JobError(TaiatError):
    """Raised when a request about a job cannot be carried out."""


class InvalidJob(JobError, ValueError):
    """Raised when a job's fields are invalid; nothing is written."""


class InvalidDependency(JobError, ValueError):
    """Raised when a dependency is unknown, the job itself, in a cycle, or can never complete."""


class DuplicateJob(JobError, ValueError):
    """Raised when a job id is already taken."""


class JobNotFound(JobError, LookupError):
    """Raised when no job has the given id."""


class AmbiguousJobId(JobError, LookupError):
    """Raised when a shortened job id is the beginning of more than one job's id."""


class StackUnavailable(JobError):
    """Raised when a job's stack cannot be had: it is not running, or no stack came in time."""


class InvalidTransition(JobError):
    """Raised when a job is not in a state that allows the requested change."""


class PlanningError(JobError, ValueError):
    """Raised when a query cannot be planned: no agent produces the goal, an input is missing,
    two agents produce the same output and nothing chooses between them, or the agents' needs
    form a cycle."""


class NotJson(InvalidJob):
    """Raised when a value cannot be JSON at all (a type JSON has no room for, a number that is
    not finite, a key that is not text, nesting too deep); `clean_json` turns it into an
    InvalidJob that names the value."""


# -- inside a job ------------------------------------------------------------------------------


class InvalidLimit(TaiatError, ValueError):
    """Raised when a limit's key, cap or rate is invalid; nothing is written."""


class JobFailed(TaiatError):
    """Raised inside a job to fail it with a message, without a traceback."""


class FinalFailure(JobFailed):
    """Raised inside a job to fail it for good, without a retry: running it again cannot help."""


class EngineFailed(TaiatError):
    """Raised when the query engine failed; the message says how, in its own words."""


# -- the supervisor's own ----------------------------------------------------------------------


class ForkServerError(TaiatError):
    """The fork server could not start, or has gone."""


# -- the `taiat` command -----------------------------------------------------------------------


class UsageError(TaiatError):
    """Raised when a value on the command line is unusable; nothing is changed."""


class Unavailable(TaiatError):
    """Raised when a tool the command needs is not installed."""
