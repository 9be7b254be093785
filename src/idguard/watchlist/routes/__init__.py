"""The watchlist's HTTP routes: the blacklist, incidents (list, stream, close), protection."""
