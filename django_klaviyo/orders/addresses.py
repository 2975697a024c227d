"""Addresses as Klaviyo's guide structures them (``BillingAddress`` / ``ShippingAddress``:
``FirstName``, ``LastName``, ``Company``, ``Address1``, ``Address2``, ``City``, ``Region``,
``RegionCode``, ``Country``, ``CountryCode``, ``Zip``, ``Phone``), from the forms stores
keep them in: a dict with snake_case keys (or oscar's), an address object (our names or
django-oscar's), or one free-text field (its first line is ``Address1``, the rest
``Address2``). Never sent as a bare string.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django_klaviyo.orders import fields as mapping

ADDRESS_KEYS = {
    "first_name": "FirstName",
    "last_name": "LastName",
    "company": "Company",
    "address1": "Address1",
    "address2": "Address2",
    "city": "City",
    "region": "Region",
    "region_code": "RegionCode",
    "country": "Country",
    "country_code": "CountryCode",
    "zip": "Zip",
    "phone": "Phone",
}
# Address attributes of an address OBJECT, by Klaviyo key: our snake_case names first,
# then django-oscar's (line1, line4, state, postcode, country.iso_3166_1_a2).
ADDRESS_ATTRIBUTES = {
    "FirstName": ("first_name",),
    "LastName": ("last_name",),
    "Company": ("company",),
    "Address1": ("address1", "line1"),
    "Address2": ("address2", "line2"),
    "City": ("city", "line4"),
    "Region": ("region", "state"),
    "RegionCode": ("region_code",),
    "Country": ("country.printable_name", "country"),
    "CountryCode": ("country_code", "country.iso_3166_1_a2"),
    "Zip": ("zip", "postcode"),
    "Phone": ("phone", "phone_number"),
}
# Oscar-style keys of an address DICT (the object attributes above, by their plain name).
ADDRESS_ALIASES = {
    path: key
    for key, paths in ADDRESS_ATTRIBUTES.items()
    for path in paths
    if "." not in path and path not in ADDRESS_KEYS
}


def text_address(value: str) -> dict[str, str] | None:
    """An address kept as one text field: its first line is Address1, the other lines
    Address2 (joined by ", "). Nothing is guessed: a store that wants City, Zip or
    CountryCode maps a dict or an address object."""
    lines = [line.strip(" ,") for line in value.replace("\r", "\n").split("\n")]
    lines = [line for line in lines if line]
    if not lines:
        return None
    result = {"Address1": lines[0]}
    if len(lines) > 1:
        result["Address2"] = ", ".join(lines[1:])
    return result


def address(value: Any) -> dict[str, Any] | None:
    """A dict (snake_case keys, or oscar's), an address object or free text → Klaviyo's
    address properties (the guide's structure, never a bare string)."""
    if not value:
        return None
    if isinstance(value, Mapping):
        return {
            ADDRESS_KEYS.get(k) or ADDRESS_ALIASES.get(k, k): v
            for k, v in value.items()
            if v not in (None, "")
        }
    if isinstance(value, str):
        return text_address(value)
    result: dict[str, Any] = {}
    for key, paths in ADDRESS_ATTRIBUTES.items():
        for path in paths:
            found = mapping.resolve(value, path)
            if found not in (None, "") and not hasattr(found, "_meta"):
                result[key] = str(found)
                break
    return result or None
