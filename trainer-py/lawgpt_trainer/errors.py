class InvalidInput(Exception):
    """Bad config or data: retrying cannot help, so the orchestrator must not retry."""
