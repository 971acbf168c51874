"""The PostgreSQL store: several masters on several machines share one database.

Imported only when ``open_store`` is given a ``postgresql://`` URL, so psycopg is loaded (and a
server needed) only then. The parts are the SQLite backend's own classes running over a
sqlite3-shaped adapter of a psycopg connection (``connection.py``): the portable SQL is written
once, and this package holds only what differs (DDL and migrations, the SKIP LOCKED claim, COPY
ingest, NOTIFY/LISTEN, reconnecting with backoff).
"""
