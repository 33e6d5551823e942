"""atmpnet: an event-sourced platform for networks of advanced-therapy manufacturing sites."""

__version__ = "0.1.0"
