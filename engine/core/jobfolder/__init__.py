"""The job folder: Parquet output exactly once per shard, on any filesystem pyarrow knows.

The only owner of a job folder's files: ``sink`` (``results/``, ``rejected/``, ``commits/``, the
commit decision: ``JobFolder.commit``, the first commit of a shard wins), ``storage`` (one folder
on a local disk or an object store), ``lease`` (one job per folder at a time), ``failures``
(``failed/``) and ``report`` (``report.json``).
"""
