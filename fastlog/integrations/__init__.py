"""Adapters that let existing consensus libraries store their log in fastlog.

Each adapter lives in its own module and imports its library only when that
module is imported, so fastlog itself never depends on them:

* :mod:`fastlog.integrations.pysyncobj` -- a journal for PySyncObj's ``SyncObj``
  (install with ``pip install fastlog[pysyncobj]``).
"""
