"""Placeholder: the save receivers arrive with the outbox pipeline."""


def connect_receivers() -> None:
    return None
