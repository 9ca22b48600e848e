from __future__ import annotations

from django.contrib import admin
from django.urls import path

from tests.apps.django_project import views

urlpatterns = [
    path("orders", views.create_order),
    path("checkout", views.checkout),
    path("checkout-elsewhere", views.checkout_separate_database),
    path("orders-elsewhere", views.create_order_separate_database),
    path("admin/", admin.site.urls),
]
