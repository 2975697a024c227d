"""The order path: where each order value is read (``fields``), the default mappers
(``mappers``), placement (``placement``), refunds (``refunds``) and what was already
reversed (``ledger``), browse and cart properties (``browse``), the save receivers
(``receivers``) and the system checks (``checks``).
"""
