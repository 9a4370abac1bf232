"""A bare Django project: the framework ceiling that is not made of the product's own choices (README: Benchmark).

No middleware, no installed app, one URL, one view doing one indexed read of the devices table, the product's own
database settings, served by the same gunicorn configuration (``gunicorn.conf.py``) with this WSGI module."""
