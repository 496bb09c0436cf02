"""The lean RESP connection: one auto-pipelined socket per event loop for the hot paths.

* :mod:`~framework.transport.lean.connection`: ``RespConnection`` (buffered writes, hiredis parsing).
* :mod:`~framework.transport.lean.pipe`: the pipelined I/O; :mod:`~framework.transport.lean.errors`: replies
  mapped to redis-py's exceptions; :mod:`~framework.transport.lean.client`: ``RespClient`` (the lean
  :class:`~framework.transport.commands.Commands`) and when it applies.
* :mod:`~framework.transport.lean.pipeline`, :mod:`~framework.transport.lean.fastredis`,
  :mod:`~framework.transport.lean.wire`: redis-py's commands and pipelines run over that socket.
* :mod:`~framework.transport.lean.subscriber`: the pub/sub listener for the one-hop hand-off.

May import: the top-level task model, and :mod:`framework.transport.commands` for the types of the interface
``RespClient`` implements.
"""
