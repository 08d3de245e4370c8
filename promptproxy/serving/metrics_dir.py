"""The directory where the processes of one server keep their Prometheus figures
(prometheus_client's multiprocess mode; see accounting/metrics.py).

The server prepares it as it starts, before any worker is forked or imports
prometheus_client, and puts it in the environment the workers inherit:

- `PROMETHEUS_MULTIPROC_DIR`, when the operator sets it, emptied of the files of
  a previous run (they would be added to this run's figures);
- otherwise a new private temporary directory, removed when the server exits.

A temporary directory rather than the data directory: the files are per-process
figures that mean nothing after a restart, named by process id. Two instances
must never share them (in containers their workers often have the same process
ids), and a data directory may be a volume shared by several instances or kept
across restarts. A temporary directory is the instance's own, on local disk or
tmpfs, where memory-mapped files are cheap.

Standard library only: gunicorn's master runs this before the workers patch it.
"""

import atexit
import glob
import os
import shutil
import tempfile

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def prepare():
    """The directory for this server's run, fresh, and set in the environment."""
    given = os.environ.get(VARIABLE)
    if given:
        os.makedirs(given, exist_ok=True)
        for path in glob.glob(os.path.join(given, "*.db")):
            os.remove(path)
        return given
    made = tempfile.mkdtemp(prefix="promptproxy-metrics-")
    os.environ[VARIABLE] = made
    atexit.register(remove, made, os.getpid())
    return made


def remove(path, owner):
    # Forked workers inherit this exit handler: only the server that made the directory removes it.
    if os.getpid() == owner:
        shutil.rmtree(path, ignore_errors=True)
