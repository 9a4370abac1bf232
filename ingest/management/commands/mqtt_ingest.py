"""``manage.py mqtt_ingest``: one MQTT ingestion worker (see ``ingest.worker``)."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import CommandError
from prometheus_client import start_http_server

from ingest.dynsec import BrokerAddress
from ingest.journal import JournalLocked
from ingest.worker import Ingestor, default_client_id
from sensorsync_project.commands import OperatorCommand


class Command(OperatorCommand):
    help = "Apply the devices' MQTT state reports (iot/device/<uuid>/state) as the PATCH endpoint does."
    epilog = """\
One worker process: one member of the shared subscription $share/sensorsync/iot/device/+/state. Run as many as
the database keeps up with, on any machines, each with its own --worker number (or --client-id) that it keeps
across restarts: its persistent session on the broker holds the messages it had not acknowledged when it died,
and they are redelivered when it comes back. Run it under a supervisor that restarts it (systemd Restart=always).

It keeps a receipt journal (--journal-dir, one small file per client id): when it first received each message it
has not acknowledged, so that a message redelivered after a crash keeps its place in its device's order. Keep the
directory across restarts, on the worker's machine; a second worker with the same client id there refuses to start.

Needs SENSORSYNC_MQTT_URL (or SENSORSYNC_MQTT_BROKER_URL), SENSORSYNC_MQTT_ADMIN_USERNAME and
SENSORSYNC_MQTT_ADMIN_PASSWORD. Every minute it also makes the broker's device clients match the database
(deletes those of deleted or re-keyed devices, disables those of inactive ones).

To run fewer workers, retire the ones that go (--retire): a stopped worker's session stays a member of the shared
subscription and the broker keeps queueing its share of the reports there until the session expires, and then
drops them. --retire leaves the subscription, applies what the broker still holds for the worker, ends its session
and exits.

examples:
  manage.py mqtt_ingest                         # worker 1 of this host
  manage.py mqtt_ingest --worker 2 --metrics-port 9102
  manage.py mqtt_ingest --worker 2 --retire     # after stopping worker 2 for good

exit status: 0 stopped by SIGTERM or SIGINT (after the message in hand is committed and acknowledged), or retired;
1 not configured, a worker with the same client id runs on this machine, or stopped before it retired; 2 usage
error"""

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
            "--batch-size",
            type=int,
            default=32,
            help="Messages applied together, of those received and not yet applied: one device lookup for all, one "
            "write for those that change nothing but liveness and facts (default 32; 1: one by one).",
        )
        parser.add_argument(
            "--batch-wait",
            type=float,
            default=0.05,
            help="Seconds a batch waits for more messages after its first (default 0.05; 0: only what is buffered). "
            "A steady fleet's reports arrive one by one: waiting a little applies them together.",
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
        parser.add_argument(
            "--journal-dir",
            default=str(settings.SENSORSYNC_MQTT_JOURNAL_DIR),
            help="Directory of the receipt journal (default SENSORSYNC_MQTT_JOURNAL_DIR: %(default)s).",
        )
        parser.add_argument("--metrics-port", type=int, help="Serve Prometheus metrics on this port (0.0.0.0).")
        parser.add_argument(
            "--retire",
            action="store_true",
            help="Take this worker out for good: apply what the broker holds for it, end its session, exit.",
        )
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
        _limits_check(options)
        try:
            ingestor = Ingestor(
                url=url,
                username=username,
                password=password,
                client_id=options["client_id"] or default_client_id(options["worker"]),
                journal_dir=Path(options["journal_dir"]),
                receive_maximum=options["receive_maximum"],
                session_expiry=options["session_expiry"],
                converge_interval=options["converge_interval"],
                batch_size=options["batch_size"],
                batch_wait=options["batch_wait"],
            )
        except JournalLocked as exc:
            raise CommandError(f"{exc}: it is running already.") from exc
        except OSError as exc:
            raise CommandError(f"--journal-dir: {exc}") from exc
        if options["metrics_port"]:
            start_http_server(options["metrics_port"])
        ingestor.install_signal_handlers()
        doing = "retiring from" if options["retire"] else "reading"
        self.stderr.write(f"mqtt_ingest: {ingestor.client_id} {doing} {url} (SIGTERM stops it)")
        ingestor.run(max_messages=options["max_messages"], retire=options["retire"])
        if options["retire"] and not ingestor.retired:
            raise CommandError(f"{ingestor.client_id} stopped before it retired: its session is still on the broker.")
        if ingestor.retired:
            self.stdout.write(f"{ingestor.client_id} retired: {ingestor.processed} messages applied, session ended.")


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


def _limits_check(options: dict) -> None:
    if not 1 <= options["receive_maximum"] <= 65_535:
        raise CommandError("--receive-maximum must be from 1 to 65535.")
    if not 1 <= options["batch_size"] <= 1000:
        raise CommandError("--batch-size must be from 1 to 1000.")
    if not 0 <= options["batch_wait"] <= 1:
        raise CommandError("--batch-wait must be from 0 to 1 second.")
