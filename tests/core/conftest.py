# Core tests start from cold memo caches: every lru_cache in pipe_relay.core is cleared before each test.
# Invariant: a cached answer from an earlier test (or from mutmut's warm-up run) never stands in for a call.
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator

import pytest

import pipe_relay.core

_CACHED = [
    value
    for info in pkgutil.iter_modules(pipe_relay.core.__path__, "pipe_relay.core.")
    for value in vars(importlib.import_module(info.name)).values()
    if callable(getattr(value, "cache_clear", None))
]


@pytest.fixture(autouse=True)
def _cold_caches() -> Iterator[None]:
    """mutmut forks each mutant from a process whose caches its warm-up run filled: without this, a
    mutant inside `safe_content_type` (memoized) would never run for the arguments tests repeat."""
    for cached in _CACHED:
        cached.cache_clear()
    yield
