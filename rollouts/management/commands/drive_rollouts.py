"""``manage.py drive_rollouts``: the driver that moves staged rollouts on (README, "Staged rollouts")."""

import signal
import time

from django.core.management.base import CommandError
from django.db import connection

from rollouts import services
from rollouts.selectors import rollout_progress
from sensorsync_project.commands import OperatorCommand


class Command(OperatorCommand):
    help = "Move every running staged rollout on: admit its stage's devices, then advance, wait or pause it."
    epilog = """\
One pass looks at every running rollout: it finishes admissions a killed pass left half-done, admits the devices
of the current stage (their assignments released to the new template version, then re-rendered), and compares
the stage's progress, read from the read model, with the rollout's thresholds: the next stage starts once the
success threshold is reached; failures over the error threshold pause the rollout; the last stage reached finishes
it. Paused, aborted and finished rollouts are left alone.

Safe to run twice at once (a driver takes a rollout with a lease, a conditional UPDATE: the other passes it by) and
to kill at any point (every step is its own transaction; a lease left by a killed driver runs out after 2 minutes).
Deploy it as a long-running worker beside the web server, e.g. a systemd service running
'manage.py drive_rollouts --watch' (deploy/systemd/sensorsync-rollouts.service), or run one pass from cron.

examples:
  manage.py drive_rollouts                        # one pass, then exit
  manage.py drive_rollouts --watch --interval 10  # the worker: a pass every 10 s, until SIGTERM

exit status: 0 done; 1 bad options or a pass failed"""

    def add_arguments(self, parser):
        parser.add_argument("--watch", action="store_true", help="keep running: a pass every --interval seconds")
        parser.add_argument("--interval", type=float, default=10.0, help="--watch: seconds between passes (default 10)")

    def handle(self, *args, **options):
        if options["interval"] <= 0:
            raise CommandError("--interval must be more than 0 seconds.")
        self._stop = False
        with self.audit_context():
            if not options["watch"]:
                self._pass()
                return
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, self._stop_soon)
            self.stdout.write(f"Driving rollouts every {options['interval']:g} s (SIGTERM or Ctrl-C stops).")
            while not self._stop:
                try:
                    self._pass()
                except Exception as exc:  # a pass that fails is logged and retried at the next one
                    self.stderr.write(f"error: the pass failed: {type(exc).__name__}: {exc}")
                connection.close()  # not held idle between passes
                deadline = time.monotonic() + options["interval"]
                while not self._stop and time.monotonic() < deadline:
                    time.sleep(min(0.2, options["interval"]))

    def _stop_soon(self, signum, frame):
        self._stop = True

    def _pass(self) -> None:
        results = services.rollouts_drive()
        if not results:
            self.stdout.write("No rollout is running.")
        for result in results:
            rollout = result.rollout
            if result.outcome == "busy":
                self.stdout.write(f"Rollout {rollout.name}: another driver has it")
                continue
            rollout.refresh_from_db()
            total = rollout_progress(rollout).total
            self.stdout.write(
                f"Rollout {rollout.name}: {result.outcome}"
                + (f" ({result.admitted} devices admitted)" if result.admitted else "")
                + f"; stage {rollout.current_stage + 1}/{len(rollout.stages)}, {total.targeted} targeted, "
                f"{total.deployed} deployed, {total.failed} failed, {total.offline} offline"
                + (f"; {rollout.pause_detail}" if rollout.pause_detail else "")
            )
