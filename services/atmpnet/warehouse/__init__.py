"""The ClickHouse side: connection, migrations, event store and views."""
