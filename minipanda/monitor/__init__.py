"""The monitor: read-only pages about tasks, jobs, queues and workers (``/monitor/``) and Prometheus ``/metrics``.

``queries`` gathers each page's data as plain JSON values (the same data ``?json`` returns), ``pages`` renders it
with the package's Jinja2 templates (autoescaped), ``logs`` reads a job's log tarball from the file store,
``errorcodes`` says what PanDA's error codes mean, and ``metrics`` is the Prometheus registry (database counts are
read at scrape time). The routes are in :mod:`minipanda.api.monitor`.
"""
