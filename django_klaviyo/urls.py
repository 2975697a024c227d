"""Placeholder: webhook URLs arrive with the webhook receiver."""

urlpatterns: list = []
