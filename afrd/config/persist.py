"""Write a threshold into a cell config file, keeping its comments and layout.

``set_threshold`` over the control socket changes the running threshold only; a restart goes back
to the file. :func:`persist_threshold` edits the file itself: the top-level ``threshold`` key, or
one ``[[product]]`` recipe's ``threshold`` when a product is named. Everything else (comments,
key order, spacing) stays as the person who wrote it left it (tomlkit round-trips TOML).

The new text is validated as a cell config before it replaces the file, so
a persisted threshold can never leave a config the daemon refuses on its next start. The file is
replaced atomically (temporary file + rename) when its directory is writable; where only the
file is (a unit that grants ``ReadWritePaths=`` to the file alone), it is rewritten in place.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

from afrd.errors import ConfigError


def _tomlkit():
    try:
        import tomlkit
    except ImportError:  # the web extra brings it; a bare cell install may lack it
        raise ConfigError(
            "persisting a threshold needs the tomlkit package (pip install 'afrd[web]')"
        ) from None
    return tomlkit


def _product_table(doc, product: str, path: Path):
    blocks = doc.get("product")
    if blocks is None:
        raise ConfigError(f"{path}: no [[product]] recipes, so no product {product!r} to set")
    names = []
    for block in blocks:
        name = block.get("name") if hasattr(block, "get") else None
        names.append(name)
        if name == product:
            return block
    raise ConfigError(f"{path}: no [[product]] with name = {product!r} (recipes: {names})")


def render_threshold(text: str, value: float, product: str | None = None, path: Path | None = None):
    """``text`` with the threshold set; ConfigError when the TOML or the product is wrong."""
    tomlkit = _tomlkit()
    where = path or Path("<config>")
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"{where}: threshold must be a finite number, got {value!r}")
    try:
        doc = tomlkit.parse(text)
    except Exception as exc:  # tomlkit raises its own ParseError family
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    table = doc if product is None else _product_table(doc, product, where)
    table["threshold"] = float(value)
    return tomlkit.dumps(doc)


def render_model(
    text: str, bundle: Path, value: float, product: str | None = None, path: Path | None = None
) -> str:
    """``text`` with ``[bundle] path`` (or ``[[product]]``'s ``bundle``) and the threshold set:
    what ``promote``/``rollback`` with ``persist`` write."""
    tomlkit = _tomlkit()
    doc = tomlkit.parse(render_threshold(text, value, product, path))
    if product is None:
        if "bundle" not in doc:
            doc["bundle"] = tomlkit.table()
        doc["bundle"]["path"] = str(bundle)
    else:
        _product_table(doc, product, path or Path("<config>"))["bundle"] = str(bundle)
    return tomlkit.dumps(doc)


def persist_model(path: str | Path, bundle: Path, value: float, product: str | None = None) -> Path:
    """Set the bundle and its threshold (the cell's, or ``product``'s recipe's) in the config
    file at ``path``, as :func:`persist_threshold` sets a threshold (same checks, same
    errors)."""
    path = Path(path)
    return _persist(path, render_model(_read(path, "model"), bundle, value, product, path), "model")


def persist_threshold(path: str | Path, value: float, product: str | None = None) -> Path:
    """Set ``threshold`` (or ``[[product]]``'s for ``product``) in the config file at ``path``.

    Returns the path written. ConfigError names the file and the problem: missing, unreadable,
    not TOML, no such product, a result that would not load, or not writable.
    """
    path = Path(path)
    text = _read(path, "threshold")
    return _persist(path, render_threshold(text, value, product, path), "threshold")


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; cannot persist the {what}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config to persist the {what}: {exc}") from None


def _persist(path: Path, new: str, what: str) -> Path:
    _check_loads(path, new, what)
    try:
        _replace(path, new)
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot write the {what} ({exc.strerror or exc}); the running {what} "
            "is set but a restart will go back to the file. Give the daemon's user write access "
            "to the file (and the unit ReadWritePaths= for it)"
        ) from None
    return path


def _check_loads(path: Path, text: str, what: str = "threshold") -> None:
    """Validate ``text`` as the cell config ``path`` would be (paths are not opened on load)."""
    import tomllib

    from afrd.config.cell import parse_config

    try:
        parse_config(tomllib.loads(text), str(path))
    except (ConfigError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"{path}: the {what} was not written, the result would not load: {exc}"
        ) from None


def _replace(path: Path, text: str) -> None:
    if not os.access(path.parent, os.W_OK):
        with open(path, "r+", encoding="utf-8") as f:  # raises when the file is not writable
            f.write(text)
            f.truncate()
            f.flush()
            os.fsync(f.fileno())
        return
    mode = path.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        try:
            st = path.stat()
            os.chown(tmp, st.st_uid, st.st_gid)
        except OSError:
            pass  # not root: the file keeps this user's ownership, as any editor would leave it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
