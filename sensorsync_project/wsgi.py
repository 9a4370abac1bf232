import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sensorsync_project.settings")
application = get_wsgi_application()

from sensorsync_project.checks import secret_key_required  # noqa: E402  (needs the settings above)

secret_key_required()
