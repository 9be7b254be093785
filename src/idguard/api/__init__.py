"""The HTTP toolkit every feature's routes use: request dependencies, problem details, paging,
shared schema pieces. The app factory that mounts the features is `idguard.app`."""
