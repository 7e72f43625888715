"""promduck for Python: the promduck DuckDB extension this wheel carries, for every DuckDB the
project supports, loaded or installed into a DuckDB connection.

    import promduck
    con = promduck.connect()                  # a DuckDB connection with promduck loaded
    con.execute("SELECT * FROM prom_metrics(last_days := 7)").fetchall()

    promduck.load(con)        # a connection made with config={"allow_unsigned_extensions": "true"}
    promduck.install(con)     # into DuckDB's extension directory: `LOAD promduck` later, CLI too
    promduck.extension_path() # the file for this DuckDB

The collector is the command ``promduck-collector`` (installed into the environment's bin).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _dist_version
from pathlib import Path

try:
    __version__ = _dist_version("promduck")
except PackageNotFoundError:  # imported from a source tree
    __version__ = "0.0.0"

__all__ = ["connect", "load", "install", "extension_path", "UnsupportedDuckDB",
           "SUPPORTED_DUCKDB", "SUPPORTED_PLATFORMS"]

#: DuckDB releases (major.minor, any patch) the extension is built and tested for: its C API
#: level is v1.2.0, and every minor release since is in the project's test matrix.
SUPPORTED_DUCKDB = ("1.2", "1.3", "1.4", "1.5", "2.0")
#: DuckDB's platform names this wheel carries a file for (the same library, stamped for each):
#: DuckDB 1.2 and 1.3 Linux Python wheels report the _gcc4 one.
SUPPORTED_PLATFORMS = ("linux_amd64", "linux_amd64_gcc4")

_EXTENSION_DIR = Path(__file__).resolve().parent / "extension"


class UnsupportedDuckDB(RuntimeError):
    """The running DuckDB's version or platform has no promduck file in this wheel."""


def _supported() -> str:
    return (f"promduck {__version__} supports DuckDB {', '.join(SUPPORTED_DUCKDB[:-1])} and {SUPPORTED_DUCKDB[-1]} "
            f"(any patch release) on the platforms {' and '.join(SUPPORTED_PLATFORMS)}")


def _host(con) -> tuple[str, str]:
    """(version, platform) of the DuckDB behind ``con``, e.g. ("v1.2.2", "linux_amd64_gcc4")."""
    version = con.execute("PRAGMA version").fetchone()[0]
    platform = con.execute("PRAGMA platform").fetchone()[0]
    return version, platform


def extension_path(con=None, *, version: str | None = None, platform: str | None = None) -> Path:
    """The promduck file for a DuckDB: the one behind ``con``, or the ``version`` and ``platform``
    given (as ``PRAGMA version`` and ``PRAGMA platform`` print them), or else the duckdb module
    this Python imports. Raises UnsupportedDuckDB, naming what is supported, for any other."""
    if version is None or platform is None:
        if con is None:
            import duckdb

            with duckdb.connect(":memory:") as probe:
                v, p = _host(probe)
        else:
            v, p = _host(con)
        version, platform = version or v, platform or p
    minor = ".".join(version.lstrip("v").split(".")[:2])
    if minor not in SUPPORTED_DUCKDB or platform not in SUPPORTED_PLATFORMS:
        raise UnsupportedDuckDB(f"{_supported()}; this DuckDB is {version} on {platform}")
    path = _EXTENSION_DIR / platform / "promduck.duckdb_extension"
    if not path.is_file():
        raise UnsupportedDuckDB(f"{_supported()}, but {path} is missing from this installation")
    return path


def _allows_unsigned(con) -> bool:
    value = con.execute("SELECT current_setting('allow_unsigned_extensions')").fetchone()[0]
    return str(value).lower() in ("true", "1")


def _require_unsigned(con):
    if not _allows_unsigned(con):
        raise RuntimeError("promduck is not signed by DuckDB: make the connection with "
                           "duckdb.connect(config={'allow_unsigned_extensions': 'true'}) (or use promduck.connect())")


def load(con):
    """LOADs promduck into ``con`` (made with ``config={"allow_unsigned_extensions": "true"}``:
    promduck is not signed by DuckDB) and returns ``con``."""
    path = extension_path(con)
    _require_unsigned(con)
    con.execute("LOAD '" + str(path).replace("'", "''") + "'")
    return con


def install(con):
    """Installs promduck into ``con``'s extension directory (``SET extension_directory``, by
    default ~/.duckdb/extensions/<version>/<platform>/), so that ``LOAD promduck`` works in later
    sessions of this DuckDB version, Python or CLI (``duckdb -unsigned``). Returns ``con``."""
    path = extension_path(con)
    _require_unsigned(con)  # DuckDB checks signatures at INSTALL too, and every later LOAD needs it
    con.execute("INSTALL '" + str(path).replace("'", "''") + "'")
    return con


def connect(database: str = ":memory:", config: dict | None = None, **kwargs):
    """duckdb.connect(database, config=...) with unsigned extensions allowed and promduck loaded.
    Other keyword arguments (read_only=...) go to duckdb.connect."""
    import duckdb

    config = dict(config or {})
    config["allow_unsigned_extensions"] = "true"
    con = duckdb.connect(database, config=config, **kwargs)
    try:
        return load(con)
    except BaseException:
        con.close()
        raise
