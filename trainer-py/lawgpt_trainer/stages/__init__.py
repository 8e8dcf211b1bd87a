"""One module per pipeline stage; each has `run(request, events) -> (outputs, metrics)`."""
