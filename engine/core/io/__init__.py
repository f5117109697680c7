"""Input and output helpers for family runners: the kit a family's source and runner import.

``inputs`` (checks on files, text and numbers, raising ``RejectedInput``), ``rejections`` (the
rejected table, keyed by the family's id column), ``columns`` (Arrow columns readers see as arrays),
``parquet_rows`` (streamed Parquet reads), ``planned_bytes`` (an input read only as planned), ``digests`` (content digests for the job's fingerprint),
``prefetch`` (a worker's CPU stage), ``progress`` (per-batch progress), ``cache`` (the one cache
root), ``provenance`` (engine and library versions, the machine), ``quiet`` (third-party output).
"""
