"""Pure rules behind the four views: triage, drift, capacity, performance, and their statistics.

They import only the contract and the standard library: they take facts (plain records of
events) and return results, so they are tested without a broker or a database, and the
warehouse projector is a thin shell that feeds them rows of the event store.
"""
