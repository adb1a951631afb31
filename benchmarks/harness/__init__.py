"""What every scenario shares, so that each scenario module holds only its scenario.

* :mod:`.report`: the options a scenario gets, its table columns, goals and printed report;
* :mod:`.stats`: percentiles, medians of the repeats, rates, ratios, sample thinning;
* :mod:`.progress`: progress on stderr and the loop over repeats and configurations;
* :mod:`.machine`: facts about the machine, process CPU time and RSS, the collector;
* :mod:`.inprocess`: a runtime in this process: scratch directories, ``na.run``, subscribers;
* :mod:`.emitter`: the ``throughput`` workload (also the ``netra`` side of ``peers``);
* :mod:`.agents`: the ``bench_e2e`` agent the e2e and cluster servers register;
* :mod:`.processes`: server processes (``netra-actors serve``, uvicorn, a ``PORT`` line) with
  readiness checks, ``/metrics`` and graceful stops;
* :mod:`.clients`: fan-out of client processes (a job on stdin, ``ready``, ``go``, one JSON line);
* :mod:`.wsclient`: inside a client process, WebSockets that say ``hello`` and read frames;
* :mod:`.postgres`: a PostgreSQL server and its scratch databases.

Nothing here imports a dev-only package at import time (``websockets``, ``fastapi``, ``uvicorn``).
"""
