"""``manage.py mqtt_broker``: the project's Mosquitto, configured by ``deploy/mosquitto/sensorsync.conf``."""

import signal
import threading
from pathlib import Path

from django.conf import settings
from django.core.management.base import CommandError

from ingest.broker import SHARED_SUBSCRIPTION, BrokerUnavailable, PrivateBroker, config_render
from ingest.persistence import PersistenceUnreadable, shared_subscriptions_restore
from sensorsync_project.commands import OperatorCommand


class Command(OperatorCommand):
    help = "Run SensorSync's MQTT broker (Mosquitto with the dynamic-security plugin) in the foreground."
    epilog = """\
Renders deploy/mosquitto/sensorsync.conf for --port and --data-dir, creates the dynamic-security state on first use
(the admin account from SENSORSYNC_MQTT_ADMIN_USERNAME / SENSORSYNC_MQTT_ADMIN_PASSWORD, the roles, everything
else refused), writes the ingestion workers' shared subscription back into the persistence file (Mosquitto 2.0
does not save it: without this, reports published after a restart and before a worker subscribes again are lost),
and runs mosquitto until SIGTERM or SIGINT (it then saves its persistence file). `make run` uses it.

A broker you start yourself (systemd, `mosquitto -c` on the rendered file) needs the same step before every start,
run as the user that owns --data-dir: --restore-subscriptions does it alone (ExecStartPre=).

examples:
  manage.py mqtt_broker --port 1884 --data-dir var/mosquitto
  manage.py mqtt_broker --render-only --port 1883 --data-dir /var/lib/sensorsync-mosquitto --user mosquitto
  manage.py mqtt_broker --restore-subscriptions --data-dir /var/lib/sensorsync-mosquitto

exit status: 0 stopped (or restored); 1 Mosquitto missing, not configured, it failed to start, or the persistence
file could not be read; 2 usage error"""

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=1884, help="listen port (default 1884)")
        parser.add_argument("--bind", default="127.0.0.1", help="listen address (default 127.0.0.1)")
        parser.add_argument("--data-dir", default=str(Path(settings.BASE_DIR) / "var" / "mosquitto"))
        parser.add_argument("--user", help="with --render-only: the user mosquitto runs as (default: yours)")
        parser.add_argument("--render-only", action="store_true", help="print the configuration and exit")
        parser.add_argument(
            "--restore-subscriptions",
            action="store_true",
            help="give the workers' sessions their shared subscription back in --data-dir's persistence file, and "
            "exit (the broker must be stopped)",
        )

    def handle(self, *args, **options):
        data_dir = Path(options["data_dir"]).resolve()
        if options["render_only"]:
            self.stdout.write(
                config_render(port=options["port"], data_dir=data_dir, bind=options["bind"], user=options["user"])
            )
            return
        username, password = settings.SENSORSYNC_MQTT_ADMIN_USERNAME, settings.SENSORSYNC_MQTT_ADMIN_PASSWORD
        if options["restore_subscriptions"]:
            if not username:
                raise CommandError("Set SENSORSYNC_MQTT_ADMIN_USERNAME (the workers' account) first.")
            try:
                restored = shared_subscriptions_restore(data_dir=data_dir, username=username, topic=SHARED_SUBSCRIPTION)
            except (PersistenceUnreadable, OSError) as exc:
                raise CommandError(f"shared subscriptions not restored: {exc}") from exc
            self.stdout.write(f"shared subscription restored for {len(restored)} worker session(s): {restored}")
            return
        if not (username and password):
            raise CommandError("Set SENSORSYNC_MQTT_ADMIN_USERNAME and SENSORSYNC_MQTT_ADMIN_PASSWORD first.")
        broker = PrivateBroker(
            data_dir, admin_username=username, admin_password=password, port=options["port"], bind=options["bind"]
        )
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        try:
            broker.start()
        except BrokerUnavailable as exc:
            raise CommandError(str(exc)) from exc
        self.stderr.write(f"mqtt_broker: mosquitto on {broker.url}, state in {data_dir} (log: {broker.log_path})")
        try:
            while not stop.wait(1.0):
                if not broker.running():
                    raise CommandError(f"mosquitto exited:\n{broker.log()}")
        finally:
            broker.stop()
