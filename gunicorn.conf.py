"""gunicorn, the production server: ``gunicorn -c gunicorn.conf.py`` from the repository root.

Sync workers, one per core by default: the agent endpoints are short, CPU-bound requests against PostgreSQL, and
PERF_NOTES measured gthread and uvicorn workers ~2x slower on writes. A sync worker answers one request at a time
and closes the connection after it (a proxy in front keeps the clients' connections alive).

Production runs it behind nginx (``deploy/nginx/sensorsync.conf``), on loopback: a sync worker is held by one
connection from its first byte to its last, so a few clients sending slowly would take every worker; nginx reads
each request whole before passing it on. gunicorn trusts X-Forwarded-Proto only from 127.0.0.1/::1 (its
``forwarded_allow_ips`` default), which is where nginx connects from.

Environment:

- ``GUNICORN_BIND``: address(es), comma-separated (default ``127.0.0.1:8000``, where nginx's upstream points; keep it
  on loopback);
- ``GUNICORN_WORKERS``: worker processes (default one per CPU: the agent's requests are CPU-bound, and on the
  2-core machine the benchmark targets, PostgreSQL beside the app, 2 workers held the 10,000-device mix with p50
  10 ms where 4 workers queued it to 40-54 ms, ~7% more CPU per request. With PostgreSQL on its own machine, a
  worker more than the cores keeps one busy while another waits for a commit; ``make bench WORKERS=3`` compares);
- ``GUNICORN_TIMEOUT``: seconds before a silent worker is killed and replaced (default 30; the database
  statement timeout, ``DJANGO_DB_STATEMENT_TIMEOUT_MS``, is 10 s, so a stuck query ends first);
- ``GUNICORN_ACCESS_LOG``: ``-`` for stdout or a file (default off: one line per agent request is a lot);
- ``GUNICORN_CONTROL_SOCKET``: a path for gunicorn's control socket (default: none);
- ``PROMETHEUS_MULTIPROC_DIR``: where the workers' metrics live, so ``/metrics`` adds up every worker. With more
  than one worker and no directory given, a private one is created and removed at exit.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

wsgi_app = "sensorsync_project.wsgi:application"
bind = [address.strip() for address in os.environ.get("GUNICORN_BIND", "127.0.0.1:8000").split(",") if address]
worker_class = "sync"
workers = int(os.environ.get("GUNICORN_WORKERS") or os.cpu_count() or 1)
# Import Django and the app once in the master: workers fork ready (faster start, shared memory pages).
preload_app = True
timeout = int(os.environ.get("GUNICORN_TIMEOUT") or 30)
graceful_timeout = 20
keepalive = 5  # only for non-sync worker classes; sync workers always close after the response
backlog = 2048
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
proc_name = "sensorsync"
# gunicorn's control socket defaults to one path per user (~/.gunicorn/gunicorn.ctl): two servers on a host would
# share it. Off unless a path is given.
control_socket_disable = not os.environ.get("GUNICORN_CONTROL_SOCKET")
if not control_socket_disable:
    control_socket = os.environ["GUNICORN_CONTROL_SOCKET"]

# prometheus_client picks its multiprocess mode when it is imported, which preload_app does in the master right
# after this file is read (before any server hook runs): the directory must exist, empty, by then (values left by
# an earlier run would be added to this one's). A reload (SIGHUP) reads this file again in the same master: the
# workers' files are kept then.
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
if not _metrics_dir and workers > 1:
    _metrics_dir = tempfile.mkdtemp(prefix="sensorsync-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir
    os.environ["SENSORSYNC_METRICS_DIR_OWNED"] = _metrics_dir  # removed at exit
if _metrics_dir and os.environ.get("SENSORSYNC_METRICS_DIR_MASTER") != str(os.getpid()):
    os.environ["SENSORSYNC_METRICS_DIR_MASTER"] = str(os.getpid())
    Path(_metrics_dir).mkdir(parents=True, exist_ok=True)
    for _stale in Path(_metrics_dir).glob("*.db"):
        _stale.unlink()


def pre_fork(server, worker):
    # A database connection opened in the master must not be shared by the forked workers.
    if "django.db" in sys.modules:
        from django.db import connections

        connections.close_all()


def child_exit(server, worker):
    if _metrics_dir:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    owned = os.environ.get("SENSORSYNC_METRICS_DIR_OWNED")
    if owned:
        shutil.rmtree(owned, ignore_errors=True)
