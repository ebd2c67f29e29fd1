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


def pytest_sessionfinish(session, exitstatus):
    """After the whole suite: every ledger invariant must still hold on the
    D1 the tests wrote to (issue 4: reconciliation runs after every suite)."""
    from clairvora import reconcile
    from support import database

    report = run_sync(reconcile.check(database()))
    failed = [c for c in report["checks"] if not c["ok"]]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if failed:
        for c in failed:
            line = f"LEDGER CHECK FAILED: {c['name']}: {c['detail']}"
            if reporter is not None:
                reporter.write_line(line, red=True)
            else:
                print(line)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif reporter is not None:
        reporter.write_line(f"ledger check after the suite: {len(report['checks'])} invariants hold")
