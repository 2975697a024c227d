"""The example shop's checkout and signup forms, each with django-klaviyo's marketing
consent boxes (email, and SMS with its disclosure and a phone number)."""

from __future__ import annotations

from django import forms
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import User

from django_klaviyo.profiles.forms import MarketingConsentFormMixin


class CheckoutForm(MarketingConsentFormMixin, forms.Form):
    email = forms.EmailField(label="Email")


class SignupForm(MarketingConsentFormMixin, UserCreationForm):
    email = forms.EmailField(label="Email")

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "email")
