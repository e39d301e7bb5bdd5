"""Exceptions and exit statuses that are part of ember's public API."""

from __future__ import annotations

#: Exit status of a process that saved a checkpoint because it was preempted
#: (SIGTERM from SLURM, Kubernetes, a spot-instance reclaim). Distinct from 0
#: (done) and 1 (failed), so a wrapper script can tell "requeue me" apart.
EXIT_PREEMPTED = 99


class Preempted(SystemExit):
    """Raised out of ``fit`` after a preemption checkpoint was written. It is a
    ``SystemExit``, so an uncaught one ends the process with its exit status."""

    def __init__(self, code: int = EXIT_PREEMPTED, signal_name: str = "", checkpoint: str = "") -> None:
        super().__init__(code)
        self.signal_name = signal_name
        self.checkpoint = checkpoint

    def __str__(self) -> str:
        return f"preempted by {self.signal_name or 'a signal'}; resume from {self.checkpoint}"
