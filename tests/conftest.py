import inspect

import pytest
from pyodide.ffi import run_sync

_captured: list[str] = []


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    sig = inspect.signature(pyfuncitem.obj)
    kwargs = {name: pyfuncitem.funcargs[name] for name in sig.parameters if name in pyfuncitem.funcargs}
    run_sync(pyfuncitem.obj(**kwargs))
    return True


def pytest_runtest_logreport(report):
    # What the Worker printed during each test phase, as pytest captured it (for the log guard).
    _captured.extend(content for _name, content in report.sections)


def _say(session, line: str, red: bool = False) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line, red=red)
    else:
        print(line)


def _ledger_check(session) -> None:
    """After the whole suite: every ledger invariant must still hold on the
    D1 the tests wrote to (issue 4: reconciliation runs after every suite)."""
    from clairvora import reconcile
    from support import database

    report = run_sync(reconcile.check(database()))
    failed = [c for c in report["checks"] if not c["ok"]]
    if failed:
        for c in failed:
            _say(session, f"LEDGER CHECK FAILED: {c['name']}: {c['detail']}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    else:
        _say(session, f"ledger check after the suite: {len(report['checks'])} invariants hold")


def _log_guard(session) -> None:
    """tests/log_guard.py over the whole run's Worker output: a leaked secret fails the run."""
    import local_runtime

    from log_guard import findings
    from support import SENSITIVE_VALUES

    text = "\n".join(_captured) + "\n" + str(local_runtime.readWorkerLog())
    leaks = findings(text, SENSITIVE_VALUES)
    if leaks:
        _say(session, "LOG GUARD: SECRETS IN THE WORKER'S OUTPUT: " + "; ".join(leaks), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    else:
        _say(
            session,
            f"log guard: {len(text)} chars of Worker output hold none of the "
            f"{len(SENSITIVE_VALUES)} secrets the tests sent, nor any secret-shaped text",
        )


def pytest_sessionfinish(session, exitstatus):
    _ledger_check(session)
    _log_guard(session)
