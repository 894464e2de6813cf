"""The supervisor daemon. Its loop (`daemon`), the recorder that writes endings and rides out
outages (`recorder`), claiming ahead of free slots (`claim_ahead`), what wakes the loop
(`wakeup`), large results stored on the side (`large_results`), whether its peers live
(`liveness`), and what it tells the world: status file, metrics, sd_notify (`publishing`).

`from taiat.supervisor import Supervisor` still works, imported when first used."""

from taiat.compat import lazy_names

__getattr__, __dir__ = lazy_names(
    __name__,
    {
        "Supervisor": "taiat.supervisor.daemon",
        "SupervisorConfig": "taiat.config",
        "memory_limit_bytes": "taiat.supervisor.daemon",
    },
)
