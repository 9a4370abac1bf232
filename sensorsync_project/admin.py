"""The admin site itself (Django's autodiscovery imports this module like every app's ``admin``): its titles.
There is no public site, so no "View site" link; the fleet page is linked from the header instead."""

from django.contrib import admin

admin.site.site_header = "SensorSync"
admin.site.site_title = "SensorSync admin"
admin.site.index_title = "Devices, sensors and their events"
admin.site.site_url = None
