"""Profiles and consent: the consent mirror's writes (``consent``), GDPR erasure in the
local mirror (``erasure``), the default user mapper (``mapper``) and the user save
receivers (``receivers``).
"""
