"""The engine core: everything a job needs that is not a family. Four layers, each importing only
the ones below it (``[tool.importlinter]`` in pyproject.toml checks it):

* orchestration: ``jobs`` (the one job runner), ``registry`` (what a family is), ``options``
  (settings as one contract for the CLI and the API), ``shards``, ``errors``, ``exit_codes``;
* ``execution``: where and how shards run: worker side (the shard record, ``process_shard``, the
  out-of-memory split) and driver side (one ``Executor`` interface, in process or on Ray; only
  ``execution.ray`` imports Ray);
* ``jobfolder``: the job folder, the only owner of ``results/``, ``rejected/``, ``commits/``,
  ``failed/``, the lease and ``report.json``, and the one place that decides a commit;
* ``runtime`` (the model runtime: backends, graphs, TensorRT, batching, seeding, stopwatch) and
  ``io`` (input/output helpers for family runners: input checks, rejected rows, columns, digests,
  the CPU stage, progress, the cache root, provenance).

The core imports no family and no evaluation: it knows a family only through ``registry.Family``.
"""
