"""CLI command modules; each exposes register(group)."""
