"""The HTTP routes of verification: checks, check history, units, notifications, health."""
