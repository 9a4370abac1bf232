"""``manage.py render_fleet``: the worker that re-renders devices after changes of the fleet configuration, and the
operator's way to re-render by hand (README, "Fleet configuration")."""

import signal
import sys
import time
import uuid

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.db import connection

from fleetconfig import services
from fleetconfig.choices import RenderJobStatusChoices as JobStatus
from fleetconfig.models import RenderJob
from sensorsync_project.commands import OperatorCommand, device_uuid

BAR_WIDTH = 30


def progress_bar(job: RenderJob) -> str:
    """``[#########.....]  600/1000 devices  changed 12  unchanged 588  failed 0  with problems 3``"""
    total = max(job.total, job.processed, 1)
    filled = BAR_WIDTH * job.processed // total
    return (
        f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {job.processed:>{len(str(total))}}/{job.total} devices  "
        f"changed {job.changed}  unchanged {job.unchanged}  failed {job.failed}  with problems {job.with_problems}"
    )


def _job_uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise CommandError(f"'{value}' is not a render job's uuid.") from None


class Command(OperatorCommand):
    help = (
        "Re-render devices from the fleet configuration (templates, assignments, overrides): run the queued render "
        "jobs, or queue one and run it."
    )
    epilog = """\
A change of a template, an assignment or devices' labels queues a render job over the devices it may reach;
jobs of up to SENSORSYNC_RENDER_INLINE_MAX_DEVICES devices run at once in the request that made the change,
bigger ones wait for this command. Each device whose rendered configuration changed gets a new target version
(or, in draft mode, its draft) through the normal write path, one transaction per device; unchanged devices are
not written. A job stopped half-way (SIGTERM, a crash) goes on from its last batch.

Deploy it as a long-running worker beside the web server, e.g. a systemd service running
'manage.py render_fleet --watch' (restart=always); one worker is enough, several share the jobs.

examples:
  manage.py render_fleet                          # run every queued job, then exit
  manage.py render_fleet --watch --interval 5     # the worker: run jobs as they are queued, until SIGTERM
  manage.py render_fleet --all                    # re-render every device now (a repair)
  manage.py render_fleet --selector 'plant=3,role=boiler'
  manage.py render_fleet --device 0b5c1f2e-8c1d-4a53-9a57-3f1f3f9e6c21
  manage.py render_fleet --job 7d3e...            # run (or resume) one job

exit status: 0 done; 1 a job failed, some devices could not be written, or bad options; 2 usage error (shell)"""

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--watch", action="store_true", help="keep running: take jobs as they are queued")
        which.add_argument("--all", action="store_true", help="queue a job re-rendering every device, and run it")
        which.add_argument("--selector", metavar="SELECTOR", help="queue and run a job for the devices it selects")
        which.add_argument("--device", metavar="UUID", nargs="+", help="queue and run a job for these devices")
        which.add_argument("--job", metavar="UUID", help="run (or resume) this job")
        parser.add_argument(
            "--interval", type=float, default=5.0, help="--watch: seconds between looks for new jobs (default 5)"
        )

    def handle(self, *args, **options):
        self._stop = False
        self._failed = False
        if options["interval"] <= 0:
            raise CommandError("--interval must be more than 0 seconds.")
        with self.audit_context():
            if options["watch"]:
                self._watch(options["interval"])
            elif options["job"]:
                job = RenderJob.objects.filter(uuid=_job_uuid(options["job"])).first()
                if job is None:
                    raise CommandError(f"No render job with uuid {options['job']}.")
                if job.status == JobStatus.FAILED:
                    services.render_job_requeue(job_uuid=job.uuid, user=None)
                self._run(job.pk)
            elif options["all"] or options["selector"] is not None or options["device"]:
                self._run(self._queue(options).pk)
            else:
                self._run_queued()
        if self._failed:
            sys.exit(1)

    def _queue(self, options) -> RenderJob:
        if options["all"]:
            scope: dict = {"all": True}
        elif options["selector"] is not None:
            scope = {"selector": options["selector"]}
        else:
            scope = {"devices": [str(device_uuid(value)) for value in options["device"]]}
        try:
            return services.render_request(scope=scope, reason=f"manage.py {self.command_name}", user=None)
        except ValidationError as exc:
            messages = " ".join(message for found in exc.message_dict.values() for message in found)
            raise CommandError(messages) from None

    def _run_queued(self) -> None:
        ran = 0
        while not self._stop and (job_id := services.render_job_next()) is not None:
            self._run(job_id)
            ran += 1
        if ran == 0:
            self.stdout.write("No render job is waiting.")

    def _watch(self, interval: float) -> None:
        def stop(signum, frame):
            self._stop = True

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, stop)
        self.stdout.write(f"Watching for render jobs every {interval:g} s (SIGTERM or Ctrl-C stops).")
        while not self._stop:
            job_id = services.render_job_next()
            if job_id is not None:
                self._run(job_id)
                continue
            connection.close()  # not held idle between looks (a restarted database is picked up again)
            deadline = time.monotonic() + interval
            while not self._stop and time.monotonic() < deadline:
                time.sleep(min(0.2, interval))

    def _run(self, job_id: int) -> None:
        job = RenderJob.objects.get(pk=job_id)
        self.stdout.write(f"Render job {job.uuid}: {job.reason} ({job.total} devices)")
        tty = self.stderr.isatty()

        def progress(running: RenderJob) -> None:
            line = progress_bar(running)
            if tty:
                self.stderr.write(f"\r{line}", ending="", style_func=str)
            else:
                self.stderr.write(line, style_func=str)

        try:
            job = services.render_job_run(job_id=job_id, progress=progress, should_stop=lambda: self._stop)
        except Exception as exc:
            self._failed = True
            if tty:
                self.stderr.write("")
            self.stderr.write(f"error: render job {job.uuid} failed: {type(exc).__name__}: {exc}")
            return
        if tty:
            self.stderr.write("")
        if job.status == JobStatus.RUNNING:
            self.stdout.write("  another worker is running it")
            return
        if job.status == JobStatus.QUEUED:
            self.stdout.write(f"  stopped after {job.processed} devices; it goes on from there next time")
            return
        self.stdout.write(
            f"  {job.status}: {job.processed} devices, {job.changed} changed, {job.unchanged} unchanged, "
            f"{job.failed} failed, {job.with_problems} with problems"
        )
        for error in job.errors:
            self.stderr.write(f"  could not write {error}")
        if job.failed or job.status == JobStatus.FAILED:
            self._failed = True
