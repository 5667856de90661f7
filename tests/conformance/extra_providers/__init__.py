"""Providers beyond the installed backends; each module defines ``providers()``
(interface: ../providers.py)."""
