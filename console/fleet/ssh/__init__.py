"""SSH transport: asyncssh links, the byte pipe over a channel, and fleetscan's known_hosts."""
