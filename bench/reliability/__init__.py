"""The fault, fuzz and load suite (issue 10): bounded, loopback only.

- ``fuzz``: property-based fuzzing of every RPC from the proto descriptors (hypothesis), plus
  byte-mutated messages; a case passes when its status is neither UNKNOWN nor INTERNAL, it ends
  within its deadline, and the server then serves a good request.
- ``scenarios``: resource checks around each bad-input class (RSS before and after), faults (a
  stage killed mid-turn, provider 429/500/hang/drop/stall, SIGTERM drain), and load (sessions ×
  turns on fakes, slow readers, abandoned streams).
- ``run``: starts the services on 127.0.0.1:0 and fills the matrix; ``python -m bench --sections
  reliability`` runs it in full, ``tests/reliability`` runs a seconds-long smoke variant.
"""
