"""Errors a user can cause. The CLI prints their message as one line and exits with status 2."""


class AccelsimError(Exception):
    """Base of every error a user can cause; the message names the file and the field or node."""


class HardwareError(AccelsimError):
    """A hardware description is missing, malformed or inconsistent."""


class WorkloadError(AccelsimError):
    """A workload file is missing, malformed, or uses something accelsim cannot run."""


class UnsupportedError(WorkloadError):
    """A workload uses an operator or type that accelsim does not model (yet)."""


class InputError(AccelsimError):
    """Input data does not match the graph's inputs."""


class SweepError(AccelsimError):
    """A sweep's grid, options or store is unusable (names the --grid option or the file)."""
