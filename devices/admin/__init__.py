"""Devices and provisioning keys in the admin: ``pages`` holds the two admins (importing it registers them),
``panels`` the device page's read-only panels."""

from . import pages  # noqa: F401  (registers the admins)
