"""The asynq wire contract, byte for byte: what is stored in Redis and under which names.

* :mod:`~framework.protocol.keys`: every Redis key (asynq's schema plus our ``<ns>:ext:`` keys).
* :mod:`~framework.protocol.message`: ``TaskMessage`` and the other stored records, encode and decode.
* :mod:`~framework.protocol.proto`: asynq's protobuf schema; :mod:`~framework.protocol.scripts` and ``lua/``:
  one Lua script per state transition.

May import: the top-level task model and :mod:`framework.transport` (scripts run over a connection).
"""
