"""The fleet page's URL, included by the project's URLconf under ``fleet/`` (namespace ``fleet``)."""

from django.urls import path

from .views.fleet import fleet_overview

app_name = "fleet"
urlpatterns = [path("", fleet_overview, name="overview")]
