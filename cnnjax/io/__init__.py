"""cnnjax.io."""
