"""The tracker: win, billing and loss notices, impression pixels, clicks and postbacks;
exactly-once spend; attribution; cost per activation; the Kinesis sink.

Pure cores: ``notice`` (verification, the price macro), ``attribution``, ``cpa``, ``spend``.
Adapters: ``store`` and ``conversions`` (Postgres), ``memcache`` (frequency counters),
``kinesis`` and ``spool`` (Kinesis), ``pauses`` (the cost-per-activation rule's writes).
``notices.Tracker`` answers the endpoints independently of the HTTP transport.
"""
