import logging
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.utils import timezone

from devices.provisioning import provisioning_key_create
from fleetconfig.models import Assignment, SensorTemplate
from fleetconfig.services import assignment_create, sensor_template_create

LOGIN = "admin"

# Fleet configuration to try a staged rollout on: a template rendered on every device with a "plant" label (`make
# run`'s simulated fleet labels its devices plant=a and plant=b in turn). Its page has "roll out in stages".
DEMO_TEMPLATE = "ambient-climate"
DEMO_ASSIGNMENT = "ambient-climate-plants"
DEMO_TEMPLATE_SENSORS = [
    {
        "name": "ambient-climate",
        "protocol": "modbus",
        "enabled": True,
        "pollInterval": 10000,
        "connection": {"type": "tcp", "host": "10.30.0.20", "port": 502, "unitId": 1},
        "dataPoints": [
            {"name": "air_temperature", "address": 30001, "functionCode": 4, "dataType": "float32", "unit": "C"},
            {"name": "humidity", "address": 30003, "functionCode": 4, "dataType": "float32", "unit": "%"},
        ],
        "metadata": {},
    }
]


class Command(BaseCommand):
    help = (
        "Local quick start: a staff login with a fresh password (printed), demo devices and sensors in every "
        "status, and where to go. Not a production setup."
    )

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="Where the server will listen.")

    def handle(self, *args, url: str, **options):
        password = secrets.token_urlsafe(12)
        user, _ = get_user_model().objects.get_or_create(username=LOGIN, defaults={"email": "admin@example.com"})
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()

        # One log line per reconciliation is right for a server, noise in a quick start's console.
        reconciliation_log = logging.getLogger("sensorsync.reconciliation")
        level = reconciliation_log.level
        reconciliation_log.setLevel(logging.WARNING)
        try:
            call_command("seed_demo", user=LOGIN, stdout=self.stdout, stderr=self.stderr)
        finally:
            reconciliation_log.setLevel(level)

        self._demo_fleet_configuration(user)

        # A key for pointing a real agent at this server (it provisions itself with it); a day is enough to try.
        provisioning = provisioning_key_create(
            name=f"quick start {timezone.now():%Y-%m-%d %H:%M}",
            expires_at=timezone.now() + timedelta(days=1),
            user=user,
        )

        line = "=" * 72
        self.stdout.write(
            "\n".join(
                [
                    line,
                    "SensorSync is starting (local quick start; NOT a production configuration:",
                    "DEBUG is on, the secret key is a fixed development key, and the database is "
                    + ("SQLite)." if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3") else "DATABASE_URL)."),
                    "",
                    f"  Admin:     {url}/admin/",
                    f"  API:       {url}/api/v1/",
                    f"  API docs:  {url}/api/docs/",
                    f"  Login:     {LOGIN} / {password}   (a new password on every start)",
                    "",
                    f"  Rollouts:  {url}/admin/fleetconfig/sensortemplate/ ({DEMO_TEMPLATE}: roll a change out in "
                    "stages to plant=a)",
                    "",
                    "  A real agent registers itself with this provisioning key (valid for a day):",
                    f"    CLOUD_API_ENDPOINT={url} PROVISIONING_KEY={provisioning.secret}",
                    line,
                ]
            )
        )

    @staticmethod
    def _demo_fleet_configuration(user) -> None:
        """The demo template and its assignment, once (a later start keeps what staff did with them)."""
        if SensorTemplate.objects.filter(name=DEMO_TEMPLATE).exists():
            return
        template = sensor_template_create(
            name=DEMO_TEMPLATE,
            sensors=DEMO_TEMPLATE_SENSORS,
            description="Air temperature and humidity beside each machine (demo).",
            user=user,
        )
        if not Assignment.objects.filter(name=DEMO_ASSIGNMENT).exists():
            assignment_create(
                user=user, name=DEMO_ASSIGNMENT, template=str(template.uuid), selector="plant", priority=0
            )
