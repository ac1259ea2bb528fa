"""Reading YAML into a config model: duplicate keys refused, errors naming the file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from flame_private.config.base import CONFIG_DIR, ConfigError

M = TypeVar("M", bound=BaseModel)


def _format_validation_error(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: {err.error_count()} invalid field(s)"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<top level>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling)"
        got = e.get("input")
        shown = "" if e["type"] in ("missing", "extra_forbidden") or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {loc}: {msg}{shown}")
    return "\n".join(lines)


def parse_config(data: object, model: type[M], source: Path | str = "<memory>",
                 config_dir: Path | None = None) -> M:
    """Validate an already-parsed mapping, with errors that name ``source`` and the field.

    ``config_dir``: the folder relative ``ConfigPath`` fields resolve against (the YAML file's).
    """
    try:
        return model.model_validate(data, context={CONFIG_DIR: config_dir} if config_dir is not None else None)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(Path(source), err)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML loading that refuses a key given twice (the second would silently win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml_mapping(path: Path | str) -> dict:
    """The top-level mapping of one YAML file, unvalidated; ConfigError naming the file otherwise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def load_config(path: Path | str, model: type[M]) -> M:
    """Read one YAML file into ``model``; every failure names the file, and the field where there is one.

    Relative paths in the file (``ConfigPath`` fields) are resolved against the file's folder.
    """
    path = Path(path)
    return parse_config(read_yaml_mapping(path), model, path, config_dir=path.parent)
