"""``manage.py mqtt_ingest``: one MQTT ingestion worker (see ``ingest.worker``)."""

from django.conf import settings
from django.core.management.base import CommandError
from prometheus_client import start_http_server

from ingest.dynsec import BrokerAddress
from ingest.worker import Ingestor, default_client_id
from sensorsync_project.commands import OperatorCommand


class Command(OperatorCommand):
    help = "Apply the devices' MQTT state reports (iot/device/<uuid>/state) as the PATCH endpoint does."
    epilog = """\
One worker process: one member of the shared subscription $share/sensorsync/iot/device/+/state. Run as many as
the database keeps up with, on any machines, each with its own --worker number (or --client-id) that it keeps
across restarts: its persistent session on the broker holds the messages it had not acknowledged when it died,
and they are redelivered when it comes back. Run it under a supervisor that restarts it (systemd Restart=always).

Needs SENSORSYNC_MQTT_URL (or SENSORSYNC_MQTT_BROKER_URL), SENSORSYNC_MQTT_ADMIN_USERNAME and
SENSORSYNC_MQTT_ADMIN_PASSWORD. Every minute it also makes the broker's device clients match the database
(deletes those of deleted or re-keyed devices, disables those of inactive ones).

examples:
  manage.py mqtt_ingest                         # worker 1 of this host
  manage.py mqtt_ingest --worker 2 --metrics-port 9102

exit status: 0 stopped by SIGTERM or SIGINT (after the message in hand is committed and acknowledged);
1 not configured; 2 usage error"""

    def add_arguments(self, parser):
        parser.add_argument("--worker", type=int, default=1, help="This host's worker number (default 1).")
        parser.add_argument("--client-id", help="MQTT client id; default sensorsync-ingest-<hostname>-<worker>.")
        parser.add_argument(
            "--receive-maximum",
            type=int,
            default=32,
            help="Messages the broker may send before one is acknowledged (default 32).",
        )
        parser.add_argument(
            "--session-expiry",
            type=int,
            default=86_400,
            help="Seconds the broker keeps this worker's session (and unacknowledged messages) while it is away.",
        )
        parser.add_argument(
            "--converge-interval",
            type=float,
            default=60.0,
            help="Seconds between two reconciliations of the broker's device clients with the database (0: never).",
        )
        parser.add_argument("--metrics-port", type=int, help="Serve Prometheus metrics on this port (0.0.0.0).")
        parser.add_argument("--max-messages", type=int, help=argparse_suppress())

    def handle(self, *args, **options):
        url = settings.SENSORSYNC_MQTT_URL
        username, password = settings.SENSORSYNC_MQTT_ADMIN_USERNAME, settings.SENSORSYNC_MQTT_ADMIN_PASSWORD
        if not (url and username and password):
            raise CommandError(
                "MQTT ingestion is not configured: set SENSORSYNC_MQTT_URL (or SENSORSYNC_MQTT_BROKER_URL), "
                "SENSORSYNC_MQTT_ADMIN_USERNAME and SENSORSYNC_MQTT_ADMIN_PASSWORD."
            )
        try:
            BrokerAddress.parse(url)
        except ValueError as exc:
            raise CommandError(f"SENSORSYNC_MQTT_URL: {exc}") from exc
        if not 1 <= options["receive_maximum"] <= 65_535:
            raise CommandError("--receive-maximum must be from 1 to 65535.")
        if options["metrics_port"]:
            start_http_server(options["metrics_port"])
        ingestor = Ingestor(
            url=url,
            username=username,
            password=password,
            client_id=options["client_id"] or default_client_id(options["worker"]),
            receive_maximum=options["receive_maximum"],
            session_expiry=options["session_expiry"],
            converge_interval=options["converge_interval"],
        )
        ingestor.install_signal_handlers()
        self.stderr.write(f"mqtt_ingest: {ingestor.client_id} reading {url} (SIGTERM stops it)")
        ingestor.run(max_messages=options["max_messages"])


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS
