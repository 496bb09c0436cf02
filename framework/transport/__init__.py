"""Connections to Redis: which client to open and how commands reach the server.

* :mod:`~framework.transport.connection`: open a client from the settings (single server, Cluster,
  Sentinel, or the embedded server); :mod:`~framework.transport.cluster`, :mod:`~framework.transport.sentinel`.
* :mod:`~framework.transport.commands`: ``Commands``, how the broker's scripts and commands reach the server,
  implemented on the lean connection and on redis-py.
* :mod:`~framework.transport.health`: one log line when Redis goes away and one when it is back.
* :mod:`framework.transport.lean`: our own auto-pipelining RESP connection for the hot paths.

May import: the top-level task model and :mod:`framework.embedded`. Knows nothing of tasks or keys.
"""
