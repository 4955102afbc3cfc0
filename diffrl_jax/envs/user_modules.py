"""Importing the user's modules that register environments (`register_env`), as the
experiments/ scripts' `--import MODULE_OR_FILE.py` does before any environment name is
checked."""

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

__all__ = ["import_env_modules"]


def _is_path(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or "\\" in spec


def _module_of_file(path: Path) -> ModuleType:
    """The module of the .py file at path (absolute): the one already imported from it, or
    the file executed as a module named after its stem (a suffixed name if that is taken)."""
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve() == path:
            return module
    name, k = path.stem, 1
    while name in sys.modules or not name.isidentifier():
        name, k = f"{path.stem if path.stem.isidentifier() else 'user_envs'}_{k}", k + 1
    loader_spec = importlib.util.spec_from_file_location(name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ImportError(f"--import {path}: not a Python source file")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module
    try:
        loader_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def import_env_modules(specs: Sequence[str]) -> list[str]:
    """Imports each spec in order: a module name importable from sys.path (the working
    directory included: it is put on sys.path if missing), or the path of a .py file. A
    module already imported is not executed again, so importing twice registers nothing
    twice. Returns the specs as a run records them to import again on resume: module names
    as given, files as absolute paths.

    ImportError naming the spec when it cannot be found or its code raises (the error's
    type and message included, chained as the cause)."""
    if isinstance(specs, str):
        specs = [specs]
    recorded = []
    for spec in specs:
        if not isinstance(spec, str) or not spec.strip():
            raise ImportError(f"--import needs a module name or a .py file, got {spec!r}")
        spec = spec.strip()
        try:
            if _is_path(spec):
                path = Path(spec).expanduser().resolve()
                if not path.is_file():
                    raise ImportError(f"--import {spec}: no such file ({path})")
                _module_of_file(path)
                recorded.append(str(path))
            else:
                if "" not in sys.path and str(Path.cwd()) not in sys.path:
                    sys.path.insert(0, str(Path.cwd()))
                importlib.import_module(spec)
                recorded.append(spec)
        except ImportError as err:
            if str(err).startswith(f"--import {spec}"):
                raise
            raise ImportError(f"--import {spec}: cannot import it ({type(err).__name__}: "
                              f"{err}); give a module importable from the working directory "
                              f"or PYTHONPATH, or the path of its .py file") from err
        except Exception as err:  # the user's module raised while registering
            raise ImportError(f"--import {spec}: importing it raised {type(err).__name__}: "
                              f"{err}") from err
    return recorded
