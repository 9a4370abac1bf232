from django.db import models


class LogLevelChoices(models.TextChoices):
    """The agent's four levels (its ``LogLevel``)."""

    DEBUG = "debug", "Debug"
    INFO = "info", "Info"
    WARN = "warn", "Warning"
    ERROR = "error", "Error"


class LogSourceChoices(models.TextChoices):
    """Where a line came from, as the agent says (its ``LogSource.type``), and the server's own notes."""

    CONTAINER = "container", "Container"
    SYSTEM = "system", "System"
    MANAGER = "manager", "Agent"
    SERVER = "server", "SensorSync"  # written here: e.g. the agent's summary of lines it had to drop
