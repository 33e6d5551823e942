"""Register the committed schema catalog into a Schema Registry under the catalog's own ids.

Producers and readers agree on ids network-wide because every registry holds the catalog's
ids (``100 x family + version``), not ids the registry made up. A registry only accepts a
given id in IMPORT mode, so for each subject version the registry lacks, the registrar sets the
subject's mode (or the global mode) to IMPORT, posts the schema with its id and version, and
puts the previous mode back. Before it changes anything it checks every catalog id: when the
registry holds a different schema under one, or the subject version under another id, it
refuses (SchemaIdConflict) and registers nothing. Versions already present are left alone, so
a re-run is a no-op. Afterwards it reads every version back and fails if one differs.

Schemas are registered self-contained (the catalog inlines its shared named types), with an
empty reference list: this is what ``RegistrySource`` looks up and what it can read back.

Confluent-kafka's client has no call that posts a schema with an id, so those requests go
through the client's own REST client (same URLs, auth, retries); modes and reads use its public
methods. Its ``mock://`` client has neither modes nor registration by id.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote

import fastavro

with warnings.catch_warnings(record=True):  # authlib warns on import, see registry.py
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.error import SchemaRegistryError

from atmpnet.contract.catalog import SchemaCatalog, SchemaVersion, fingerprint
from atmpnet.errors import ConfigurationError, SchemaIdConflict, SchemaRegistrationError

IMPORT = "IMPORT"
# Confluent's "not found" error codes: subject, version, schema id, subject-level mode
_NOT_FOUND = {40401, 40402, 40403, 40409}

T = TypeVar("T")
log = logging.getLogger(__name__)


class Action(StrEnum):
    """What the registrar did with one catalog version."""

    PRESENT = "present"
    IMPORTED = "imported"


@dataclass(frozen=True)
class Registration:
    """One catalog version and what happened to it."""

    subject: str
    version: int
    schema_id: int
    action: Action


@dataclass(frozen=True)
class RegistrationReport:
    """The outcome of a run, one entry per catalog version, in catalog order."""

    registrations: list[Registration] = field(default_factory=list)

    @property
    def imported(self) -> list[Registration]:
        """Versions posted in this run."""
        return [r for r in self.registrations if r.action is Action.IMPORTED]

    @property
    def present(self) -> list[Registration]:
        """Versions the registry already held, unchanged."""
        return [r for r in self.registrations if r.action is Action.PRESENT]


def registry_client(url: str, basic_auth: str | None = None) -> Any:
    """A confluent-kafka Schema Registry client for ``url`` (``mock://`` gives the in-process mock)."""
    conf = {"url": url}
    if basic_auth:
        conf["basic.auth.user.info"] = basic_auth
    try:
        return SchemaRegistryClient.new_client(conf)
    except Exception as exc:  # the client raises plain ValueErrors on bad conf
        raise ConfigurationError(f"cannot create a Schema Registry client for {url}: {exc}") from exc


def same_schema(a: Any, b: Any) -> bool:
    """Whether two Avro schemas mean the same, whatever their key order, docs or name spelling.

    A registry may hand back its own rendering (namespaces folded, short names), so both sides
    go through fastavro's parser, which spells every name in full, before they are compared.
    """

    def normal(schema: Any) -> str:
        parsed = fastavro.parse_schema(schema, _write_hint=False, _force=True)
        return fingerprint(parsed)

    try:
        return normal(a) == normal(b)
    except (ValueError, KeyError, TypeError):
        return False


class SchemaRegistrar:
    """Imports a catalog into one registry; ``client`` is a confluent-kafka registry client."""

    def __init__(self, catalog: SchemaCatalog, client: Any, *, global_mode: bool = False) -> None:
        self.catalog = catalog
        self.client = client
        self.global_mode = global_mode

    def versions(self) -> list[SchemaVersion]:
        """Every catalog version, subject by subject, oldest first (the import order)."""
        return [v for s in self.catalog.subjects() for v in self.catalog.versions(s)]

    def plan(self) -> list[Registration]:
        """What a run would do; raises SchemaIdConflict before anything is changed."""
        planned = []
        for v in self.versions():
            held = self._schema_under_id(v.schema_id)
            if held is not None and not same_schema(held, v.schema):
                raise SchemaIdConflict(
                    v.schema_id, v.subject, v.version, "the registry holds a different schema under this id"
                )
            at_version = self._id_of_version(v.subject, v.version)
            if at_version is not None and at_version != v.schema_id:
                raise SchemaIdConflict(
                    v.schema_id,
                    v.subject,
                    v.version,
                    f"the registry holds this subject version under id {at_version}",
                )
            done = held is not None and at_version == v.schema_id
            planned.append(
                Registration(v.subject, v.version, v.schema_id, Action.PRESENT if done else Action.IMPORTED)
            )
        return planned

    def register(self) -> RegistrationReport:
        """Import the versions the registry lacks under their ids, then verify every version."""
        planned = self.plan()
        todo = {(r.subject, r.version) for r in planned if r.action is Action.IMPORTED}
        if todo:
            by_subject: dict[str, list[SchemaVersion]] = {}
            for v in self.versions():
                if (v.subject, v.version) in todo:
                    by_subject.setdefault(v.subject, []).append(v)
            if self.global_mode:
                with self._mode(None):
                    for versions in by_subject.values():
                        self._import(versions)
            else:
                for subject, versions in by_subject.items():
                    with self._mode(subject):
                        self._import(versions)
        problems = self.verify()
        if problems:
            raise SchemaRegistrationError(
                "the registry disagrees with the catalog after import:\n  " + "\n  ".join(problems)
            )
        return RegistrationReport(planned)

    def verify(self) -> list[str]:
        """Every way the registry differs from the catalog (empty when it holds each version as is)."""
        self.client.clear_caches()  # read what the server holds, not what this client remembers
        problems = []
        for v in self.versions():
            at_version = self._id_of_version(v.subject, v.version)
            if at_version is None:
                problems.append(f"{v.subject} v{v.version} is missing")
            elif at_version != v.schema_id:
                problems.append(f"{v.subject} v{v.version} has id {at_version}, catalog says {v.schema_id}")
            held = self._schema_under_id(v.schema_id)
            if held is None:
                problems.append(f"id {v.schema_id} ({v.subject} v{v.version}) is missing")
            elif not same_schema(held, v.schema):
                problems.append(f"id {v.schema_id} ({v.subject} v{v.version}) holds a different schema")
        return problems

    def _import(self, versions: list[SchemaVersion]) -> None:
        for v in versions:
            body = {
                "schema": json.dumps(v.schema, separators=(",", ":")),
                "schemaType": "AVRO",
                "references": [],
                "id": v.schema_id,
                "version": v.version,
            }
            path = f"subjects/{_quote(v.subject)}/versions"
            # the public register_schema cannot send an id; its REST client carries url and auth
            response = self._call(
                f"import {v.subject} v{v.version} as id {v.schema_id}",
                partial(self.client._rest_client.post, path, body=body),
            )
            got = response.get("id") if isinstance(response, dict) else None
            if got != v.schema_id:
                raise SchemaIdConflict(v.schema_id, v.subject, v.version, f"the registry answered id {got}")

    def _mode(self, subject: str | None) -> _ImportMode:
        return _ImportMode(self, subject)

    def _schema_under_id(self, schema_id: int) -> Any:
        held = self._call_or_none(f"read id {schema_id}", lambda: self.client.get_schema(schema_id))
        if held is None:
            return None
        if held.schema_type not in (None, "AVRO"):
            return {"schemaType": held.schema_type}  # never the same as an Avro record
        try:
            return json.loads(str(held.schema_str))
        except ValueError:
            return held.schema_str

    def _id_of_version(self, subject: str, version: int) -> int | None:
        registered = self._call_or_none(
            f"read {subject} v{version}", lambda: self.client.get_version(subject, version)
        )
        return None if registered is None else int(registered.schema_id)

    def _call(self, what: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except SchemaRegistryError as exc:
            raise SchemaRegistrationError(f"schema registry refused to {what}: {exc}") from exc
        except Exception as exc:  # httpx transport errors, e.g. unreachable host or mock:// URLs
            raise SchemaRegistrationError(f"cannot {what} at the schema registry: {exc}") from exc

    def _call_or_none(self, what: str, call: Callable[[], T]) -> T | None:
        try:
            return call()
        except SchemaRegistryError as exc:
            if exc.error_code in _NOT_FOUND or exc.http_status_code == 404:
                return None
            raise SchemaRegistrationError(f"schema registry refused to {what}: {exc}") from exc
        except Exception as exc:
            raise SchemaRegistrationError(f"cannot {what} at the schema registry: {exc}") from exc


class _ImportMode:
    """IMPORT mode for a subject (or globally) while in the block; the previous mode after it."""

    def __init__(self, registrar: SchemaRegistrar, subject: str | None) -> None:
        self.registrar = registrar
        self.subject = subject
        self.previous: str | None = None

    def __enter__(self) -> None:
        client, call = self.registrar.client, self.registrar._call
        where = f"subject {self.subject}" if self.subject else "the registry"
        if self.subject is None:
            self.previous = call("read the global mode", client.get_global_mode)
            # force: a registry that already holds schemas accepts IMPORT only when forced
            call(f"set IMPORT mode on {where}", lambda: client.update_global_mode(IMPORT, force=True))
        else:
            subject = self.subject
            self.previous = self.registrar._call_or_none(
                f"read the mode of {where}", lambda: client.get_mode(subject)
            )
            call(f"set IMPORT mode on {where}", lambda: client.update_mode(subject, IMPORT, force=True))

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        client, call = self.registrar.client, self.registrar._call
        subject, previous = self.subject, self.previous
        try:
            if subject is None:
                call("restore the global mode", lambda: client.update_global_mode(previous or "READWRITE"))
            elif previous is None:
                call(f"restore the mode of {subject}", lambda: client.delete_mode(subject))
            else:
                call(f"restore the mode of {subject}", lambda: client.update_mode(subject, previous))
        except SchemaRegistrationError as exc:
            if exc_type is None:
                raise
            # the import's own error is the one to raise; the mode left behind is logged
            log.warning("%s (after a failed import)", exc)


def _quote(subject: str) -> str:
    return quote(subject, safe="")
