"""What the compiled Avro reader and writer share: generating a function's source from a schema.

``contract/record_reader.py`` and ``site/record_writer.py`` each walk a schema and emit the
lines of one Python function; this base keeps the lines, the constants the function refers to,
fresh local names, the named types (records and enums) met so far and the ``exec`` of the
result. The walking itself, which differs between reading and writing, stays in each module.
"""

from __future__ import annotations

from typing import Any


class Unsupported(Exception):
    """The schema uses a construct this compiler does not handle."""


class SourceCompiler:
    """Lines of generated source, its constants and the schema's named types, for a subclass to fill."""

    def __init__(self, max_lines: int) -> None:
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {}
        self.named: dict[str, Any] = {}
        self.namespace = ""
        self._names = 0
        self._max_lines = max_lines  # a recursive or huge schema stops here instead of growing forever

    def name(self, prefix: str) -> str:
        """A local name not used before in this function."""
        self._names += 1
        return f"{prefix}{self._names}"

    def emit(self, indent: int, line: str) -> None:
        """Append one line at ``indent`` levels; raises Unsupported past the size limit."""
        if len(self.lines) > self._max_lines:
            raise Unsupported("schema too large or recursive")
        self.lines.append("    " * indent + line)

    def resolve(self, schema: Any) -> Any:
        """A named type's definition (records and enums seen earlier), else the schema itself."""
        if isinstance(schema, str):
            named = self.named.get(schema) or self.named.get(f"{self.namespace}.{schema}")
            return named or {"type": schema}
        return schema

    def declare(self, schema: dict[str, Any]) -> None:
        """Remember a record or enum under its full name; a record's namespace becomes the current one."""
        kind = schema["type"]
        if kind in ("record", "enum") and "name" in schema:
            name = schema["name"]
            namespace = schema.get("namespace") or self.namespace
            if "." not in name and namespace:
                name = f"{namespace}.{name}"
            self.named[name] = schema
            if kind == "record" and "." in name:
                self.namespace = name.rsplit(".", 1)[0]

    def build(self, function: str, filename: str, namespace: dict[str, Any]) -> Any:
        """Run the lines with ``namespace`` and the constants as globals; return the function ``function``."""
        namespace.update(self.consts)
        exec(compile("\n".join(self.lines), filename, "exec"), namespace)  # noqa: S102 - source generated from a parsed schema
        return namespace[function]
