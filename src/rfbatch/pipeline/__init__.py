"""The stages of the flow, one module each, joined by bounded anyio streams (see app.py)."""
