# The JavaScript global scope as Pyodide exposes it (only what src/ touches is typed loosely).
from typing import Any

def __getattr__(name: str) -> Any: ...
