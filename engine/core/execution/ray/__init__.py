"""Execution on Ray: the only package that imports ``ray`` (each module at its top).

``cluster`` joins a cluster or starts the embedded one (``reaper`` kills its processes when the
driver dies); ``placement`` spreads model actors over the nodes; ``scheduler`` is the Ray executor;
``actor`` is the model actor each worker runs in; ``stream`` runs a worker's CPU stage as a Ray task.
Nothing outside imports this package except ``execution.executor_for``, when a job has workers.
"""
