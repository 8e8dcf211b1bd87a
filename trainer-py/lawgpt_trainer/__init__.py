"""The ML half of lawgpt-pipeline: one module per pipeline stage, run by the orchestrator as
`python -m lawgpt_trainer <stage> --request <request.json>` (see contract.py)."""

__version__ = "0.1.0"
