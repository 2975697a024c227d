"""tox's inline plugin: finds the matrix's interpreters under pyenv.

pyenv makes only its global (or local) versions visible on PATH, so ``tox -e py310-...`` would
not find Python 3.10 when 3.11 is global. Unless ``--discover`` names interpreters, this hands
every ``$PYENV_ROOT/versions/3.*/bin/python3.X`` to tox's discovery, which tries them before
PATH and takes the first that matches an env's ``pyXY``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tox.config.sets import ConfigSet
from tox.plugin import impl
from tox.session.state import State


def pyenv_pythons() -> list[str]:
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    found = [p for p in root.glob("3.*/bin/python3.*") if re.fullmatch(r"python3\.\d+", p.name)]
    return [str(p) for p in sorted(found)]


@impl
def tox_add_core_config(core_conf: ConfigSet, state: State) -> None:
    options = state.conf.options
    if hasattr(options, "discover") and not options.discover:
        options.discover = pyenv_pythons()
