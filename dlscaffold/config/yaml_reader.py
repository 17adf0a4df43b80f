"""The hardened YAML reader: a config file's text read into plain data, every problem one line.

A config must be a regular file (a folder, a FIFO or a device is refused from its metadata, never
opened) of at most :data:`MAX_CONFIG_BYTES`, in UTF-8. Its YAML is read with a duplicate-key check
and limits on values (aliases counted as what they repeat) and nesting depth; ``1e-4`` is a float,
dates stay text, keys are text, and tags that are no plain data (``!!binary``, ``!!set``, ...) are
refused. Problems name ``file:line:column``.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any

import yaml

from dlscaffold.config.schema import Config
from dlscaffold.errors import UserError

# Limits that keep a broken or hostile file from exhausting memory or the stack: values in all
# (an alias counts as every value it repeats, so an alias bomb is refused before it is expanded),
# nesting depth (well inside Python's recursion limit) and file size.
MAX_YAML_NODES = 100_000
MAX_YAML_DEPTH = 100
MAX_CONFIG_BYTES = 10 * 2**20
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_PLAIN = "expected plain values: strings, numbers, true/false, null, lists and mappings"
_SURROGATE = re.compile("[\ud800-\udfff]")


class YamlProblem(Exception):
    """YAML text that cannot be read: what is wrong, and where (1-based line and column, if known).

    ``syntax`` is true for errors of the YAML text itself (reported as "invalid YAML"), false for
    the limits and checks of this module.
    """

    def __init__(self, message: str, line: int | None = None, column: int | None = None, syntax: bool = False):
        super().__init__(message)
        self.message, self.line, self.column, self.syntax = message, line, column, syntax


class _Refused(yaml.MarkedYAMLError):
    """A limit or check of this module, raised while composing or constructing."""


def _cut(text: Any, limit: int = 60) -> str:
    text = str(text)
    return text if len(text) <= limit else f"{text[: limit - 3]}... ({len(text)} characters)"


class _Loader(yaml.SafeLoader):
    """SafeLoader with the limits above and a duplicate-key check; it also reads ``1e-4`` as a
    float (YAML 1.1 wants ``1.0e-4``), leaves dates as strings and reads every key as text (keys
    are names: a model ``3:``, an init_args key ``true:``)."""

    def __init__(self, stream: str, root: str = ""):
        super().__init__(stream)
        self._nodes = 0
        self._path: list[Any] = [root] if root else []  # keys (and list indices) down to the node being composed
        self._open: set[str | None] = set()  # anchors of the nodes being composed
        self._sizes: dict[str, int] = {}  # anchor -> the number of values it stands for
        self._where: dict[int, str] = {}  # id(mapping node) -> its key path

    def _count(self, size: int, event: Any) -> None:
        self._nodes += size
        if self._nodes > MAX_YAML_NODES:
            raise _Refused(
                problem=f"found more than {MAX_YAML_NODES} values (an alias counts as every value it "
                f"repeats); expected at most {MAX_YAML_NODES}",
                problem_mark=event.start_mark,
            )

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        anchor = getattr(event, "anchor", None)
        if isinstance(event, yaml.AliasEvent):
            if anchor in self._open:
                raise _Refused(
                    problem=f"alias *{anchor} repeats a value that contains it; expected no recursive aliases",
                    problem_mark=event.start_mark,
                )
            self._count(self._sizes.get(anchor, 1), event)
            return super().compose_node(parent, index)
        self._count(1, event)
        if len(self._path) >= MAX_YAML_DEPTH:
            raise _Refused(
                problem=f"found values nested more than {MAX_YAML_DEPTH} levels deep; expected at most "
                f"{MAX_YAML_DEPTH}",
                problem_mark=event.start_mark,
            )
        start = self._nodes
        self._open.add(anchor)
        self._path.append(index.value if isinstance(index, yaml.ScalarNode) else index)
        node = super().compose_node(parent, index)
        if isinstance(node, yaml.ScalarNode) and _SURROGATE.search(node.value):  # "\\ud800": no UTF-8 for it
            raise _Refused(
                problem="found an escaped surrogate (\\ud800 to \\udfff), which is no character; expected "
                "text that UTF-8 can hold",
                problem_mark=node.start_mark,
            )
        if isinstance(node, yaml.MappingNode):
            self._where[id(node)] = ".".join(str(part) for part in self._path if part is not None)
        self._path.pop()
        self._open.discard(anchor)
        if anchor is not None:
            self._sizes[anchor] = self._nodes - start + 1
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):  # a key given twice is an error, not a silent overwrite
            seen: dict[Any, Any] = {}
            for i, (key_node, value_node) in enumerate(node.value):
                if key_node.tag == _MERGE_TAG:
                    continue
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _STR_TAG:  # keys are names: "3:" is "3"
                    key_node = yaml.ScalarNode(_STR_TAG, key_node.value, key_node.start_mark, key_node.end_mark)
                    node.value[i] = (key_node, value_node)
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:
                    continue  # an unhashable key: SafeConstructor reports it
                if first is not key_node.start_mark:
                    parent = self._where.get(id(node), "")
                    raise _Refused(
                        problem=f"{parent + '.' if parent else ''}{key}: duplicate key (first at line "
                        f"{first.line + 1}); expected each key once",
                        problem_mark=key_node.start_mark,
                    )
        return super().construct_mapping(node, deep)

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, KeyError, TypeError, OverflowError) as exc:  # e.g. "!!int abc", 5000 digits
            kind = node.tag.rsplit(":", 1)[-1]
            reason = "" if isinstance(exc, KeyError) else f" ({_cut(str(exc).split(': ')[0], 80)})"
            raise _Refused(
                problem=f"found '{_cut(node.value)}', which cannot be read as {kind}{reason}; expected a valid {kind}",
                problem_mark=node.start_mark,
            ) from None


def _refuse_tag(loader: _Loader, node: Any) -> Any:
    raise _Refused(problem=f"found a !!{node.tag.rsplit(':', 1)[-1]} value; {_PLAIN}", problem_mark=node.start_mark)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)
for _tag in ("binary", "timestamp", "omap", "pairs", "set"):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refuse_tag)


def _unshared(value: Any) -> Any:
    """A copy in which no two places share a list or mapping (an alias becomes a copy), so that
    changing one place (an override, a resolved path) never changes another."""
    if isinstance(value, dict):
        return {key: _unshared(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unshared(item) for item in value]
    return value


def _problem(exc: yaml.YAMLError, text: str) -> YamlProblem:
    """One :class:`YamlProblem` for any error PyYAML raises."""
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow, e.g. NUL
        before = text[: exc.position]
        return YamlProblem(
            f"found the character U+{exc.character:04X}, which YAML does not allow; expected printable text",
            before.count("\n") + 1,
            len(before) - before.rfind("\n"),
            True,
        )
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["unreadable"])[0]
    context = getattr(exc, "context", None)
    if context and problem == "second occurrence":  # found duplicate anchor 'x'; first occurrence
        problem = f"{context.split(';')[0]} (first at line {exc.context_mark.line + 1})"
    elif context:  # e.g. "while scanning a quoted scalar", "expected a single document in the stream"
        problem = f"{context}, {problem}"
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
    return YamlProblem(problem, line, column, syntax=not isinstance(exc, _Refused))


def parse_yaml(text: str, root: str = "") -> Any:
    """Parse YAML text within the limits above; ``root`` is the key path the text is the value of
    (an override's key), for the key paths in messages and the depth limit.

    Raises:
        YamlProblem: invalid YAML, a duplicate key, too many values or too deep nesting.
    """
    loader = None
    try:
        loader = _Loader(text, root)
        return _unshared(loader.get_single_data())
    except yaml.YAMLError as exc:
        raise _problem(exc, text) from None
    finally:
        if loader is not None:
            loader.dispose()


_NOT_REGULAR = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def not_regular_file(path: Path) -> str | None:
    """What ``path`` is when it is not a regular file (following links): ``"a folder"``, ``"a named
    pipe (FIFO)"``, ``"a character device"``, ...; None for a regular file or nothing at all.

    Only the file's metadata is read: a FIFO or a device is never opened (reading one can block
    forever, or never end, as ``/dev/zero``)."""
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):  # missing, a dangling link, a NUL in the name: reported where it is read
        return None
    if stat.S_ISREG(mode):
        return None
    return "a folder" if stat.S_ISDIR(mode) else _NOT_REGULAR.get(stat.S_IFMT(mode), "not a regular file")


def check_config_path(path: Path) -> None:
    """Refuse, without opening it, what is not a config file: a folder, a FIFO or a device (reading
    those would hang or never end), nothing at all. Cheap: commands call it before importing torch."""
    kind = not_regular_file(path)
    if kind == "a folder":
        raise UserError(f"{path}: found a folder; expected a config file, e.g. {path}/config.yml")
    if kind is not None:
        raise UserError(f"{path}: found {kind}, not a regular file; expected a config file such as config.yml")
    if not path.is_file():
        raise UserError(f"{path}: config file not found; pass the path to a config.yml")


def _read_text(path: Path) -> str:
    """A config file's text; a folder, a FIFO or device, an unreadable, oversized or non-UTF-8 file is one line."""
    check_config_path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise UserError(
            f"{path}: cannot read the file ({exc.strerror or exc}); expected a readable config file"
        ) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise UserError(
            f"{path}: found a file over {MAX_CONFIG_BYTES // 2**20} MiB; expected a config file of "
            f"at most {MAX_CONFIG_BYTES // 2**20} MiB"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(
            f"{path}:{line}: found the byte 0x{data[exc.start]:02x}, which is not UTF-8; "
            "expected a UTF-8 text file (save it as UTF-8)"
        ) from None


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; any problem with the file or its text is one line naming the file."""
    try:
        data = parse_yaml(_read_text(path))
    except YamlProblem as exc:
        where = f"{exc.line}:{exc.column}:" if exc.line is not None else ""
        raise UserError(f"{path}:{where} {'invalid YAML: ' if exc.syntax else ''}{exc.message}") from None
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else "a single value"
        found = "an empty file" if data is None else f"{kind} ({_cut(data, 40)})"
        raise UserError(f"{path}: found {found}; expected a mapping of sections: {', '.join(Config.model_fields)}")
    return data
