from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("klaviyo/", include("django_klaviyo.urls")),
    path("store/", include("shop.urls")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(next_page="/store/"), name="logout"),
    path("", RedirectView.as_view(url="/store/")),
]
