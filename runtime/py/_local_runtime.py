"""Python half of the offline local runtime (not part of the Worker).

Mirrors what workerd's Python entrypoint helper does for a class-based
Worker: a fresh entrypoint instance per event, arguments converted with the
SDK's python_from_rpc and results with python_to_rpc.
"""

import collections
import importlib
import inspect
import os
import random
import sys

from workers import python_from_rpc, python_to_rpc

_import_phase = False


def _refuse_entropy(*_args, **_kwargs):
    if _import_phase:
        raise RuntimeError(
            "random numbers at module import time are forbidden in workerd: generate ids and IVs inside handlers"
        )
    return _original_urandom(*_args, **_kwargs)


_original_urandom = os.urandom


def import_entrypoint(module_dir: str, module_name: str, class_name: str):
    """Import the Worker's main module the way workerd does, entropy refused."""
    global _import_phase
    if module_dir not in sys.path:
        sys.path.insert(0, module_dir)
    importlib.invalidate_caches()
    _import_phase = True
    os.urandom = _refuse_entropy
    # `random` (hence SystemRandom, `secrets`, our ids) holds its own reference
    # to urandom, taken when it was imported: refuse through that one too.
    random._urandom = _refuse_entropy
    saved_state = random.getstate()
    try:
        module = importlib.import_module(module_name)
    finally:
        _import_phase = False
        random.setstate(saved_state)
    return getattr(module, class_name)


# Observability for the runtime's own tests: how many entrypoint instances
# were made, and the latest two (to show each event got a fresh one).
instances_created = 0
recent_instances: collections.deque = collections.deque(maxlen=2)


async def call_entrypoint(entrypoint_class, method: str, ctx, env, args):
    global instances_created
    instance = entrypoint_class(ctx, env)
    instances_created += 1
    recent_instances.append(instance)
    result = getattr(instance, method)(*[python_from_rpc(a) for a in args])
    if inspect.isawaitable(result):
        result = await result
    return python_to_rpc(result)
