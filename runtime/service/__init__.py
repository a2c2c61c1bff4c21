"""guardedge.runtime.service: the gRPC service — server, client, configuration, metrics.

    guardedge serve --model demo                      # the server (server.py, config.py)
    from guardedge.runtime.service.client import GuardClient

Modules: ``config`` (settings and their precedence), ``convert`` (wire <-> library types),
``wire`` (bounded checks on request bytes before parsing), ``batcher`` (dynamic batching and
the bounded queue), ``auth`` (tokens, TLS), ``metrics``, ``httpd`` (the metrics and probe port),
``logs``, ``server`` (the servicer and the process lifecycle), ``background`` (a server on a
thread or as a child process), ``client``. The API itself is proto/guardedge/v1/guard.proto;
docs/api.md and docs/service.md describe it for callers and operators.
"""
