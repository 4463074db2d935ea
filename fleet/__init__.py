"""rtbfleet's shared kernel: settings, schema, embedded Postgres, buses, events, command line."""

__version__ = "0.1.0"
