"""The SQLite backend: schema and migrations, the store, claims and leases, the change watcher."""
