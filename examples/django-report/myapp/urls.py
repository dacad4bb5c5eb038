from django.urls import path
from roles.views import HealthCheckView

urlpatterns = [path("api/v1/healthz/", HealthCheckView.as_view())]
