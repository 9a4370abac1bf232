from .support import broker, mosquitto_available, worker_processes  # noqa: F401 (fixtures)
