"""The one strict reader of kvguard's data files (policy files, scenario files): YAML or JSON
holding exactly one mapping.

YAML and JSON both forgive what a file that steers a security tool must not: a key given twice
keeps its last value (`mode: alert` ... `mode: remediate` is quietly a remediating policy), an empty
file or `/dev/null` is "nothing", which reads as "the defaults", and a second YAML document or a
list at the top level is some other file's content. So `read_mapping` refuses each of them, and a
file over its size limit before a byte is parsed (a parser holds many times a document's size in
memory). Every refusal is one line naming the file and the problem.
"""

from __future__ import annotations

import functools
import json
import os
import stat
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


class DataFileError(ValueError):
    """A data file that cannot be used: `{file}: {problem}`, on one line."""


@functools.cache
def strict_loader() -> Any:
    """The YAML loader that refuses a key given twice in one mapping (keys merged in with `<<` may
    be overridden, as YAML intends). PyYAML is imported only when a file is read: a worker without
    a policy file never needs it."""
    import yaml

    base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader reads large files far faster

    class StrictLoader(base):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: the base constructor reports it
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}",
                        key_node.start_mark)
            mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
            return mapping

    return StrictLoader


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    mapping: dict[str, Any] = {}
    for key, value in pairs:
        if key in mapping:
            raise ValueError(f"found duplicate key {key!r}")
        mapping[key] = value
    return mapping


def _size(size: int) -> str:
    return f"{size / MIB:.1f} MiB" if size >= MIB else f"{size} bytes"


def _read_bytes(path: Path, what: str, max_bytes: int | None) -> bytes:
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise DataFileError(f"{path}: not a regular file (a device such as /dev/null, a FIFO or a "
                                f"directory): a {what} file is a YAML or JSON file")
        if max_bytes is not None and info.st_size > max_bytes:
            raise DataFileError(f"{path}: {_size(info.st_size)}, over the {_size(max_bytes)} a {what} file may be")
        with open(path, "rb") as handle:
            data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
    except OSError as error:
        raise DataFileError(f"{path}: cannot read {what} file ({error.strerror})") from None
    if max_bytes is not None and len(data) > max_bytes:  # it grew since it was looked at
        raise DataFileError(f"{path}: over the {_size(max_bytes)} a {what} file may be")
    return data


def _yaml_problem(error: Exception) -> str:
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    return f"{problem} at line {mark.line + 1} column {mark.column + 1}" if mark is not None else str(problem)


def read_mapping(path: str | Path, what: str, max_bytes: int | None = MIB) -> dict[str, Any]:
    """The one mapping a data file holds: JSON when its name ends in `.json`, YAML otherwise.
    Raises DataFileError (`what` names the kind of file in the message)."""
    import yaml

    source = Path(path)
    data = _read_bytes(source, what, max_bytes)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataFileError(f"{source}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    if not text.strip():
        raise DataFileError(f"{source}: empty: a {what} file holds one mapping of keys ({{}} for none)")
    if source.suffix.lower() == ".json":
        try:
            documents = [json.loads(text, object_pairs_hook=_unique_keys)]
        except json.JSONDecodeError as error:
            raise DataFileError(f"{source}: not valid JSON ({error.msg} at line {error.lineno} column "
                                f"{error.colno})") from None
        except ValueError as error:  # a duplicate key
            raise DataFileError(f"{source}: not valid JSON ({error})") from None
    else:
        try:
            documents = list(yaml.load_all(text, Loader=strict_loader()))
        except yaml.YAMLError as error:
            raise DataFileError(f"{source}: not valid YAML ({_yaml_problem(error)})") from None
    if len(documents) > 1:
        raise DataFileError(f"{source}: holds {len(documents)} YAML documents (separated by ---): "
                            f"a {what} file is one")
    document = documents[0] if documents else None
    if document is None:
        raise DataFileError(f"{source}: empty (only comments): a {what} file holds one mapping of keys ({{}} for none)")
    if not isinstance(document, dict):
        raise DataFileError(f"{source}: holds a {_kind(document)}, not a mapping of {what} keys")
    return document


def _kind(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__)
