from django.urls import path

from . import views

urlpatterns = [path("bare/<uuid:uuid>", views.device_id)]
