"""cnnjax.data."""
