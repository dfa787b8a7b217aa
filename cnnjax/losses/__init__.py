"""cnnjax.losses."""
