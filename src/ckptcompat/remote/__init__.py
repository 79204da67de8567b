"""Remote evaluation: a PostgreSQL task queue, workers per torch cell, shards, a report.

* :mod:`.schema`: the queue's two tables and :func:`~.schema.connect` (psycopg 3);
* :mod:`.queue`: :class:`~.queue.TaskQueue` -- submit, claim (``FOR UPDATE SKIP LOCKED``
  leases with a heartbeat), heartbeat, complete (stored once), reap expired leases and
  timeouts (retried, at most ``max_attempts``), status;
* :mod:`.worker`: claims only its cell's tasks, evaluates with
  :class:`ckptcompat.evaluation.evaluator.PolicyEvaluator` into its own DuckDB shard;
* :mod:`.collect`: merges shards into the stats DB (idempotent);
* :mod:`.report`: results per policy and cell against a reference cell.

psycopg is imported only here (the ``remote`` extra); see docs/design.md section 3.
"""
