"""The example storefront: ``path("store/", include("shop.urls"))``."""

from django.urls import path

from shop import views

app_name = "shop"

urlpatterns = [
    path("", views.product_list, name="products"),
    path("p/<str:sku>/", views.product_detail, name="product"),
    path("c/<slug:slug>/", views.category, name="category"),
    path("search/", views.search, name="search"),
    path("cart/", views.cart_view, name="cart"),
    path("cart/add/<str:sku>/", views.cart_add, name="cart-add"),
    path("checkout/", views.checkout, name="checkout"),
    path("orders/<str:number>/", views.order_done, name="order-done"),
    path("signup/", views.signup, name="signup"),
]
