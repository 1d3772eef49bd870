"""The operator's page (`afrd web`): a separate process, a client of the daemon's sockets."""
