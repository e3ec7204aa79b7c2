"""The sections of ``python -m bench``, the stacks they run on, and the report they write."""
