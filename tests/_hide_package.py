"""Source text that makes `lmke_hf` unimportable in a child interpreter, however it is installed (editable
installs put it on every path), to prove that checkpoints load with `trust_remote_code=True` alone."""

HIDE_LMKE_HF = """
import importlib.abc as _abc
import sys as _sys


class _HideLmkeHf(_abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "lmke_hf":
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)")
        return None


_sys.meta_path.insert(0, _HideLmkeHf())
"""
