"""Settings: typed run-config keys, their validators, and the one-line error every bad value gets.

A :class:`Setting` is one kebab-case key with its default, one sentence of help and a validator
(``cast``) that converts a raw value (from ``pyproject.toml``, ``--run-config``, ``fl-poison run
KEY=VALUE`` or a sweep file) and checks it on its own. The core settings live in
:mod:`fl_poison.core.config`; each attack and defense declares its own in its module, and the
catalogue (:mod:`fl_poison.core.catalogue`) gathers them. A problem raises :class:`ConfigError`
whose message is one line: the key, the bad value and what is allowed (scikit-learn's style).
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Generic, TypeVar

T = TypeVar("T")

# Flower's run config carries integers as signed 64-bit numbers (and numpy and torch seeds must
# fit in 64 bits): a larger integer cannot reach the apps, so no integer setting may exceed it.
MAX_INTEGER = 2**63 - 1
# A result folder name: letters, digits, '.', '_' and '-', starting with a letter or a digit (no
# hidden folders, nothing a shell or a path would read specially), at most 100 characters.
RUN_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
RUN_NAME_ALLOWED = "up to 100 letters, digits, '.', '_' or '-', starting with a letter or a digit (empty = automatic)"
# Images larger than this (per side) are refused before PIL decodes them: inputs of the lab's
# models are at most a few hundred pixels a side, and a larger image (a trigger, a dataset
# image) is either a mistake or a decompression bomb.
MAX_IMAGE_SIDE = 4096
MAX_PATH_LENGTH = 4096


class ConfigError(ValueError):
    """A setting is unknown or has a value that is not allowed; the message is one line."""

    @classmethod
    def bad_value(cls, key: str, value: object, allowed: str) -> ConfigError:
        """Build the standard message: ``key: bad value 'v'; allowed: ...``."""
        return cls(f"{key}: bad value {value!r}; allowed: {allowed}")


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One run-config key; ``config[setting]`` reads its value from an experiment configuration.

    Parameters
    ----------
    key : str
        The kebab-case name used on the command line and in ``pyproject.toml``.
    default : bool | int | float | str
        The value used when the key is not given.
    help : str
        One sentence for the README table and ``fl-poison settings``.
    cast : Callable[[str, object], T]
        Converts the raw value and checks it on its own; raises :class:`ConfigError`.
    group : str
        Where the setting belongs in tables: ``core`` or the name of the attack or defense that
        declares it (set by the catalogue).
    """

    key: str
    default: bool | int | float | str
    help: str
    cast: Callable[[str, object], T]
    group: str = "core"

    @property
    def field(self) -> str:
        """The attribute name on :class:`~fl_poison.core.config.ExperimentConfig` (core settings)."""
        return self.key.replace("-", "_")


def _as_int(key: str, value: object, minimum: int | None = None, maximum: int = MAX_INTEGER) -> int:
    if isinstance(value, bool):
        raise ConfigError.bad_value(key, value, "an integer")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ConfigError.bad_value(key, value, "an integer") from None
    if not isinstance(value, int):
        raise ConfigError.bad_value(key, value, "an integer")
    if minimum is not None and value < minimum:
        raise ConfigError.bad_value(key, value, f"an integer >= {minimum}")
    if value > maximum:
        low = f"{minimum} .. " if minimum is not None else "at most "
        raise ConfigError.bad_value(key, value, f"an integer {low}{maximum}")
    return value


def _as_float(key: str, value: object) -> float:
    if isinstance(value, bool):
        raise ConfigError.bad_value(key, value, "a number")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError.bad_value(key, value, "a number") from None
    if not math.isfinite(number):
        raise ConfigError.bad_value(key, value, "a finite number")
    return number


def integer(minimum: int, maximum: int = MAX_INTEGER) -> Callable[[str, object], int]:
    """A validator for integers in ``minimum .. maximum``.

    Parameters
    ----------
    minimum : int
        The smallest allowed value.
    maximum : int
        The largest allowed value (default :data:`MAX_INTEGER`, what Flower's run config holds).
    """
    return lambda key, value: _as_int(key, value, minimum, maximum)


def positive_number(key: str, value: object) -> float:
    """A validator for numbers ``> 0``."""
    number = _as_float(key, value)
    if number <= 0:
        raise ConfigError.bad_value(key, value, "a number > 0")
    return number


def non_negative_number(key: str, value: object) -> float:
    """A validator for numbers ``>= 0``."""
    number = _as_float(key, value)
    if number < 0:
        raise ConfigError.bad_value(key, value, "a number >= 0")
    return number


def number_in(low: float, high: float, low_included: bool, high_included: bool) -> Callable[[str, object], float]:
    """A validator for numbers in an interval, e.g. ``number_in(0, 1, False, True)`` for (0, 1]."""
    allowed = f"a number in {'[' if low_included else '('}{low:g}, {high:g}{']' if high_included else ')'}"

    def cast(key: str, value: object) -> float:
        number = _as_float(key, value)
        above = number >= low if low_included else number > low
        below = number <= high if high_included else number < high
        if not (above and below):
            raise ConfigError.bad_value(key, value, allowed)
        return number

    return cast


def choice(*names: str) -> Callable[[str, object], str]:
    """A validator for one of ``names`` (case-insensitive)."""

    def cast(key: str, value: object) -> str:
        text = str(value).strip().lower()
        if text not in names:
            raise ConfigError.bad_value(key, value, " | ".join(names))
        return text

    return cast


def boolean(key: str, value: object) -> bool:
    """A validator for booleans; accepts true/false, yes/no, 1/0."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    raise ConfigError.bad_value(key, value, "true | false")


def text(key: str, value: object) -> str:
    """A validator for free text."""
    if isinstance(value, (dict, list)):
        raise ConfigError.bad_value(key, value, "a string")
    return str(value).strip()


def run_name(key: str, value: object) -> str:
    """A validator for a result folder name: empty, or :data:`RUN_NAME_PATTERN` (no path, quote or control character)."""
    name = text(key, value)
    if name and not RUN_NAME_PATTERN.fullmatch(name):
        raise ConfigError.bad_value(key, value, RUN_NAME_ALLOWED)
    return name


def folder_path(key: str, value: object) -> str:
    """A validator for a folder path: non-empty text without control characters, at most :data:`MAX_PATH_LENGTH` characters.

    Whether the folder can be written is checked where it is used (see
    :func:`fl_poison.launch.check_output_dir`).
    """
    path = text(key, value)
    if (
        not path
        or len(path) > MAX_PATH_LENGTH
        or any(ord(character) < 32 or ord(character) == 127 for character in path)
    ):
        raise ConfigError.bad_value(
            key, value, f"a folder path of 1 to {MAX_PATH_LENGTH} characters without control characters"
        )
    return path


def clients_per_round(key: str, value: object) -> int | float:
    """A count (an integer >= 1, returned as int) or a fraction of all clients (a float in (0, 1])."""
    allowed = "a count >= 1 (integer) or a fraction in (0, 1] (float)"
    if isinstance(value, bool):
        raise ConfigError.bad_value(key, value, allowed)
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        return _as_int(key, value, minimum=1)
    number = _as_float(key, value)
    if 0 < number <= 1:
        return number
    if number > 1 and number.is_integer():
        return int(number)
    raise ConfigError.bad_value(key, value, allowed)


def auto_or(validator: Callable[[str, object], T], allowed: str) -> Callable[[str, object], T | None]:
    """A validator accepting ``auto`` (returned as None) or whatever ``validator`` accepts."""

    def cast(key: str, value: object) -> T | None:
        if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
            return None
        try:
            return validator(key, value)
        except ConfigError:
            raise ConfigError.bad_value(key, value, f"auto | {allowed}") from None

    return cast


def class_or_all(key: str, value: object) -> int:
    """A class index (integer >= 0) or ``all`` (returned as -1)."""
    if isinstance(value, str) and value.strip().lower() == "all":
        return -1
    return _as_int(key, value, minimum=0)


def id_list(key: str, value: object) -> tuple[int, ...]:
    """Comma-separated partition ids (``"3,4"``), sorted and without duplicates; empty = none."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ConfigError.bad_value(key, value, 'comma-separated partition ids such as "3,4"')
    parts = [part.strip() for part in value.split(",") if part.strip()]
    try:
        ids = sorted({int(part) for part in parts})
    except ValueError:
        raise ConfigError.bad_value(key, value, 'comma-separated partition ids such as "3,4"') from None
    if any(pid < 0 for pid in ids):
        raise ConfigError.bad_value(key, value, "partition ids >= 0")
    return tuple(ids)


def image_header(key: str, source: str | IO[bytes], name: str) -> tuple[tuple[int, int], str]:
    """The size ``(width, height)`` and PIL mode of an image, read from its header only, nothing decoded.

    Parameters
    ----------
    key : str
        The setting the image comes from (named in the error).
    source : str | IO[bytes]
        A file path or an open binary stream.
    name : str
        How to name the image in the error (its path, or a row of a dataset).

    Raises
    ------
    ConfigError
        When PIL cannot identify the image, or it is larger than :data:`MAX_IMAGE_SIDE` pixels a
        side (PIL's decompression-bomb error and warning included).
    """
    from PIL import Image

    allowed = f"an image of at most {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} pixels"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                size, mode = (int(image.size[0]), int(image.size[1])), str(image.mode)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ConfigError(
            f"{key}: image {name!r} is a decompression bomb (too many pixels); allowed: {allowed}"
        ) from None
    except (OSError, SyntaxError, ValueError):
        raise ConfigError(
            f"{key}: cannot read image {name!r}; allowed: a readable image file (PNG, JPEG, ...)"
        ) from None
    if max(size) > MAX_IMAGE_SIDE:
        raise ConfigError(f"{key}: image {name!r} is {size[0]}x{size[1]} pixels; allowed: {allowed}")
    return size, mode


def readable_image(key: str, value: object) -> str:
    """An image file that PIL can open, at most :data:`MAX_IMAGE_SIDE` pixels a side, or empty for the built-in trigger."""
    path = text(key, value)
    if not path:
        return ""
    expanded = os.path.abspath(os.path.expanduser(path))
    if "\x00" in expanded or not os.path.isfile(expanded):
        raise ConfigError(f"{key}: cannot read image {path!r}; allowed: a readable image file (PNG, JPEG, ...)")
    image_header(key, expanded, path)
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(expanded) as image:
                image.verify()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ConfigError(
            f"{key}: cannot read image {path!r}; allowed: a readable image file (PNG, JPEG, ...)"
        ) from None
    return expanded


def toml_literal(value: object) -> str:
    """``value`` written as a TOML literal for ``--run-config``.

    Parameters
    ----------
    value : object
        A bool, int or float (written as such) or anything else (written as a TOML string of its ``str``).
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    # ensure_ascii=False: JSON would escape characters beyond U+FFFF as surrogate pairs, which
    # TOML rejects. TOML, unlike JSON, also requires DEL (U+007F) to be escaped.
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")
