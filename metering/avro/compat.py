"""BACKWARD compatibility: can a reader with the NEW schema read data written with the OLD?

Implements Avro's schema-resolution rules (the same ones fastavro applies when decoding),
so a schema change that would break a consumer is caught in a unit test, not in production.
"""

from __future__ import annotations

from typing import Any

PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
PROMOTIONS: dict[str, set[str]] = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}
_NAMED = {"record", "enum", "fixed", "error"}


def _collect_names(schema: Any, namespace: str, out: dict[str, dict[str, Any]]) -> None:
    if isinstance(schema, list):
        for branch in schema:
            _collect_names(branch, namespace, out)
        return
    if not isinstance(schema, dict):
        return
    kind = schema.get("type")
    if kind in _NAMED:
        name = str(schema["name"])
        ns = str(schema.get("namespace", namespace))
        full = name if "." in name or not ns else f"{ns}.{name}"
        out[full] = schema
        out.setdefault(name, schema)
        namespace = full.rpartition(".")[0]
    if kind in {"record", "error"}:
        for field in schema["fields"]:
            _collect_names(field["type"], namespace, out)
    elif kind == "array":
        _collect_names(schema["items"], namespace, out)
    elif kind == "map":
        _collect_names(schema["values"], namespace, out)
    elif isinstance(kind, (dict, list)):
        _collect_names(kind, namespace, out)


class _Resolver:
    def __init__(self, reader: dict[str, Any], writer: dict[str, Any]) -> None:
        self.reader_names: dict[str, dict[str, Any]] = {}
        self.writer_names: dict[str, dict[str, Any]] = {}
        _collect_names(reader, "", self.reader_names)
        _collect_names(writer, "", self.writer_names)
        self.problems: list[str] = []
        self._seen: set[tuple[int, int]] = set()

    def _norm(self, schema: Any, names: dict[str, dict[str, Any]]) -> Any:
        """Turn references and ``{"type": "long"}`` wrappers into something comparable."""
        if isinstance(schema, str):
            return schema if schema in PRIMITIVES else names.get(schema, schema)
        if isinstance(schema, dict) and isinstance(schema.get("type"), (str, list, dict)):
            kind = schema["type"]
            if isinstance(kind, (list, dict)) or (kind in PRIMITIVES):
                return self._norm(kind, names)
            if kind not in _NAMED and kind not in {"array", "map"}:
                return names.get(kind, kind)
        return schema

    @staticmethod
    def _kind(schema: Any) -> str:
        if isinstance(schema, list):
            return "union"
        if isinstance(schema, dict):
            return str(schema["type"])
        return str(schema)

    def matches(self, reader: Any, writer: Any, path: str) -> bool:
        """Whether ``writer`` data resolves into ``reader`` (records problems when not)."""
        saved = len(self.problems)
        self.resolve(reader, writer, path)
        ok = len(self.problems) == saved
        del self.problems[saved:]
        return ok

    def resolve(self, reader: Any, writer: Any, path: str) -> None:
        reader = self._norm(reader, self.reader_names)
        writer = self._norm(writer, self.writer_names)
        rk, wk = self._kind(reader), self._kind(writer)
        if wk == "union":
            for i, branch in enumerate(writer):
                if rk == "union":
                    if not any(self.matches(r, branch, path) for r in reader):
                        self.problems.append(
                            f"{path}: writer union branch {i} ({self._kind(branch)}) has no "
                            "matching branch in the reader union"
                        )
                else:
                    self.resolve(reader, branch, f"{path}<branch {i}>")
            return
        if rk == "union":
            if not any(self.matches(r, writer, path) for r in reader):
                self.problems.append(f"{path}: reader union has no branch for writer type {wk}")
            return
        if rk != wk:
            if wk in PROMOTIONS and rk in PROMOTIONS[wk]:
                return
            self.problems.append(f"{path}: type changed from {wk} to {rk}")
            return
        if rk in {"record", "error"}:
            self._record(reader, writer, path)
        elif rk == "enum":
            self._enum(reader, writer, path)
        elif rk == "fixed":
            if reader["size"] != writer["size"] or not self._same_name(reader, writer):
                self.problems.append(f"{path}: fixed type changed name or size")
        elif rk == "array":
            self.resolve(reader["items"], writer["items"], f"{path}[]")
        elif rk == "map":
            self.resolve(reader["values"], writer["values"], f"{path}{{}}")

    @staticmethod
    def _same_name(reader: dict[str, Any], writer: dict[str, Any]) -> bool:
        short = str(writer["name"]).rpartition(".")[2]
        aliases = {str(a).rpartition(".")[2] for a in reader.get("aliases", [])}
        return str(reader["name"]).rpartition(".")[2] == short or short in aliases

    def _record(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> None:
        if not self._same_name(reader, writer):
            self.problems.append(
                f"{path}: record renamed from {writer['name']} to {reader['name']} without alias"
            )
            return
        key = (id(reader), id(writer))
        if key in self._seen:  # recursive types
            return
        self._seen.add(key)
        writer_fields = {f["name"]: f for f in writer["fields"]}
        for field in reader["fields"]:
            names = [field["name"], *field.get("aliases", [])]
            match = next((writer_fields[n] for n in names if n in writer_fields), None)
            where = f"{path}.{field['name']}" if path else field["name"]
            if match is None:
                if "default" not in field:
                    self.problems.append(f"{where}: new field without a default")
                continue
            self.resolve(field["type"], match["type"], where)

    def _enum(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> None:
        if not self._same_name(reader, writer):
            self.problems.append(f"{path}: enum renamed from {writer['name']} to {reader['name']}")
            return
        missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
        if missing and "default" not in reader:
            self.problems.append(f"{path}: enum symbols removed without a default: {missing}")


def backward_problems(new: dict[str, Any], old: dict[str, Any]) -> list[str]:
    """Why a reader using ``new`` cannot read data written with ``old`` (empty: compatible)."""
    resolver = _Resolver(new, old)
    resolver.resolve(new, old, "")
    return resolver.problems


def is_backward_compatible(new: dict[str, Any], old: dict[str, Any]) -> bool:
    return not backward_problems(new, old)
