class InvalidInput(Exception):
    """Bad config or data: retrying cannot help, so the orchestrator must not retry."""


class Interrupted(Exception):
    """Training stopped on SIGTERM after saving a checkpoint; a later attempt resumes from it."""
