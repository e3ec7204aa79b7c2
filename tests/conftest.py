"""Shared fixtures. Helper modules here (``support``, ``speech``) import as top-level modules:
pytest puts this directory, which has no ``__init__.py``, on the path for its conftest."""
