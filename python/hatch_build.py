"""Packs what `make build` built into the wheel and tags it for the platform (see pyproject.toml).

Inside the package, the extension is laid out per DuckDB platform name:
    promduck/extension/<platform>/promduck.duckdb_extension      (linux_amd64, linux_amd64_gcc4)
one stamped file per platform serves every DuckDB version (C API v1.2.0). Not the versioned
layout of build/repository (<version>/<platform>/, hard links there): a wheel (a zip) has no
links, and 22 copies of a 35 MB library per platform would make a 500 MB wheel.
promduck.install() installs the file for the running DuckDB by path instead
(`INSTALL '<file>'`), which DuckDB copies to the same place in its extension directory.
The collector becomes the script promduck-collector (the wheel's .data/scripts: the venv's bin).

PROMDUCK_BUILD: the folder `make build` wrote (default ../build).
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

#: DuckDB's platform names for this machine's Linux builds: the plain one, and the one DuckDB 1.2
#: and 1.3 Linux Python wheels report (same library, stamped a second time by `make build`).
ARCHES = {"x86_64": "amd64", "aarch64": "arm64"}


def glibc_floor(paths) -> tuple[int, int]:
    """The newest GLIBC_2.x symbol version the ELF files need (their .gnu.version_r names):
    the manylinux_2_x tag they can claim. auditwheel checks it afterwards (`make wheel`)."""
    newest = (2, 17)
    for p in paths:
        for major, minor in re.findall(rb"GLIBC_(\d+)\.(\d+)(?:\.\d+)?\x00", Path(p).read_bytes()):
            newest = max(newest, (int(major), int(minor)))
    return newest


class CustomBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version, build_data):
        if self.target_name != "wheel":
            return
        build = Path(os.environ.get("PROMDUCK_BUILD") or Path(self.root).parent / "build").resolve()
        machine = platform.machine()
        duckdb_platform = f"linux_{ARCHES[machine]}"
        files = {
            build / "promduck.duckdb_extension": f"promduck/extension/{duckdb_platform}/promduck.duckdb_extension",
            build / f"{duckdb_platform}_gcc4" / "promduck.duckdb_extension":
                f"promduck/extension/{duckdb_platform}_gcc4/promduck.duckdb_extension",
        }
        collector = build / "promduck-collector"
        missing = [str(p) for p in [*files, collector] if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"run `make build` first: {', '.join(missing)} missing")
        for src, dest in files.items():
            build_data["force_include"][str(src)] = dest
        build_data["shared_scripts"][str(collector)] = "promduck-collector"
        major, minor = glibc_floor([*files, collector])
        build_data["pure_python"] = False
        build_data["tag"] = f"py3-none-manylinux_{major}_{minor}_{machine}"
