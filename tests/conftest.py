import inspect

import pytest
from pyodide.ffi import run_sync


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    sig = inspect.signature(pyfuncitem.obj)
    kwargs = {name: pyfuncitem.funcargs[name] for name in sig.parameters if name in pyfuncitem.funcargs}
    run_sync(pyfuncitem.obj(**kwargs))
    return True
