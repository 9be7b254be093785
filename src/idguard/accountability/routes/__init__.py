"""Accountability's HTTP routes."""
