from __future__ import annotations

from django.contrib import admin
from django.urls import path

from tests.apps.django_project import views

urlpatterns = [
    path("orders", views.create_order),
    path("checkout", views.checkout),
    path("orders-elsewhere", views.create_order_separate_database),
    path("admin/", admin.site.urls),
]
