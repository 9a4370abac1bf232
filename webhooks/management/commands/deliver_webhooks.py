"""``manage.py deliver_webhooks``: the webhook delivery worker (see ``webhooks.worker``)."""

from django.core.management.base import CommandError
from prometheus_client import start_http_server

from sensorsync_project.commands import OperatorCommand
from webhooks.worker import DeliveryWorker


class Command(OperatorCommand):
    help = "Send the queued webhook deliveries: signed POSTs, retried with backoff until delivered or given up."
    epilog = """\
Recommended: run it as a long-lived service beside the web servers (systemd Restart=always; `make run` starts one),
one or more copies on any machines: each round claims a batch of due deliveries for itself (SKIP LOCKED on
PostgreSQL), so two workers never send the same delivery; a worker killed mid-POST leaves its batch to the others
after a lease. It polls for due deliveries every --interval seconds, so deliveries go out within about a second.
--once sends what is due and exits, for cron; retries then wait for the next run (every minute, say).

Settings: SENSORSYNC_WEBHOOK_TIMEOUT_SECONDS, SENSORSYNC_WEBHOOK_MAX_ATTEMPTS, SENSORSYNC_WEBHOOK_BACKOFF_SECONDS,
SENSORSYNC_WEBHOOK_BACKOFF_MAX_SECONDS, SENSORSYNC_WEBHOOK_RETENTION_DAYS (it deletes older finished deliveries
every hour, and at the end of --once).

examples:
  manage.py deliver_webhooks                        # the service
  manage.py deliver_webhooks --metrics-port 9103    # with its Prometheus metrics
  manage.py deliver_webhooks --once                 # from cron

exit status: 0 stopped by SIGTERM or SIGINT (after the POST in hand is recorded), or --once done; 1 a database
error under --once; 2 usage error"""

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="Send what is due, prune, and exit (for cron).")
        parser.add_argument("--batch", type=int, default=20, help="Deliveries claimed per round (default 20).")
        parser.add_argument(
            "--interval", type=float, default=1.0, help="Seconds between two looks when nothing is due (default 1)."
        )
        parser.add_argument("--metrics-port", type=int, help="Serve Prometheus metrics on this port (0.0.0.0).")

    def handle(self, *args, **options):
        if not 1 <= options["batch"] <= 1000:
            raise CommandError("--batch must be from 1 to 1000.")
        if options["interval"] <= 0:
            raise CommandError("--interval must be a positive number of seconds.")
        if options["metrics_port"]:
            start_http_server(options["metrics_port"])
        worker = DeliveryWorker(batch=options["batch"], idle_seconds=options["interval"])
        if not options["once"]:
            self.stderr.write(f"deliver_webhooks: {worker.name} sending (SIGTERM stops it)")
        with worker.signals_stop_it():
            totals = worker.run(once=options["once"])
        self.stdout.write(f"deliver_webhooks: {totals.summary()}")
