"""The worker's periodic background jobs, each on its own timer.

* :mod:`~framework.worker.background.periodic`: ``Periodic``, the runner each job gets (its interval, earlier
  passes on demand, Redis faults reported); a job is an object with a ``run_once`` pass.
* :mod:`~framework.worker.background.forwarder`: due scheduled and retry tasks to pending.
* :mod:`~framework.worker.background.recoverer`: tasks whose lease expired (a worker died) back to work.
* :mod:`~framework.worker.background.janitor`: completed tasks past their retention.
* :mod:`~framework.worker.background.aggregator`: groups turned into one aggregated task.
* :mod:`~framework.worker.background.workflows`: workflow steps whose task vanished or was finished outside the
  framework's scripts, failed as lost.

May import: the worker's lower parts, the broker, the protocol and the model. Talks to Redis through the broker.
"""
