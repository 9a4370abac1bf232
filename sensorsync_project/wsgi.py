import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sensorsync_project.settings")
django.setup(set_prefix=False)

from sensorsync_project.checks import secret_key_required  # noqa: E402  (needs the settings above)
from sensorsync_project.handlers import ProjectApplication  # noqa: E402

# The agents' routes through a short middleware chain (SENSORSYNC_AGENT_MIDDLEWARE), the rest through MIDDLEWARE.
application = ProjectApplication()

secret_key_required()
