"""``manage.py mqtt_broker``: the project's Mosquitto, configured by ``deploy/mosquitto/sensorsync.conf``."""

import signal
import threading
from pathlib import Path

from django.conf import settings
from django.core.management.base import CommandError

from ingest.broker import BrokerUnavailable, PrivateBroker, config_render
from sensorsync_project.commands import OperatorCommand


class Command(OperatorCommand):
    help = "Run SensorSync's MQTT broker (Mosquitto with the dynamic-security plugin) in the foreground."
    epilog = """\
Renders deploy/mosquitto/sensorsync.conf for --port and --data-dir, creates the dynamic-security state on first use
(the admin account from SENSORSYNC_MQTT_ADMIN_USERNAME / SENSORSYNC_MQTT_ADMIN_PASSWORD, the roles, everything
else refused), and runs mosquitto until SIGTERM or SIGINT (it then saves its persistence file). `make run` uses it.

examples:
  manage.py mqtt_broker --port 1884 --data-dir var/mosquitto
  manage.py mqtt_broker --render-only --port 1883 --data-dir /var/lib/sensorsync-mosquitto --user mosquitto

exit status: 0 stopped; 1 Mosquitto missing, not configured, or it failed to start; 2 usage error"""

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=1884, help="listen port (default 1884)")
        parser.add_argument("--bind", default="127.0.0.1", help="listen address (default 127.0.0.1)")
        parser.add_argument("--data-dir", default=str(Path(settings.BASE_DIR) / "var" / "mosquitto"))
        parser.add_argument("--user", help="with --render-only: the user mosquitto runs as (default: yours)")
        parser.add_argument("--render-only", action="store_true", help="print the configuration and exit")

    def handle(self, *args, **options):
        data_dir = Path(options["data_dir"]).resolve()
        if options["render_only"]:
            self.stdout.write(
                config_render(port=options["port"], data_dir=data_dir, bind=options["bind"], user=options["user"])
            )
            return
        username, password = settings.SENSORSYNC_MQTT_ADMIN_USERNAME, settings.SENSORSYNC_MQTT_ADMIN_PASSWORD
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
