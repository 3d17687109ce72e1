"""Alembic migrations of the job store (run automatically by JobStore on open)."""
