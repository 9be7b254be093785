"""Networked verification (联网核查): units and their keys, the in-memory card index and the hot
path that answers from it, the check log, notifications for watched cards."""
