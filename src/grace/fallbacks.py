"""Every fallback a process takes — a compiled decode step that runs eagerly, ``auto`` resolved to the CPU,
bf16 switched off on a CPU, PLAID replaced by exact search — recorded once, logged once, and written into the
result and provenance JSON (``fallbacks``), so no number says "compiled" or "PLAID" when something else ran."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)
_RECORDED: dict[tuple[str, str, str, str], dict] = {}


def record_fallback(what: str, wanted: str, used: str, reason: str) -> None:
    """Note that ``what`` ran as ``used`` instead of ``wanted`` (and why); logged the first time only."""
    key = (what, wanted, used, reason)
    if key not in _RECORDED:
        _RECORDED[key] = {"what": what, "wanted": wanted, "used": used, "reason": reason}
        log.warning("fallback: %s ran as %s, not %s (%s)", what, used, wanted, reason)


def recorded_fallbacks() -> list[dict]:
    """The fallbacks of this process so far, in the order they were first taken."""
    return list(_RECORDED.values())


def clear_fallbacks() -> None:
    """Forget every recorded fallback (a new run in the same process)."""
    _RECORDED.clear()
