"""Wiring of the security screen into the completion pipeline (policy from the server's config)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from server.config import ProtegeConfig

log = logging.getLogger(__name__)


def make_screen(config: ProtegeConfig) -> tuple[Callable[[str, int, int, str, str], Any] | None, str | None]:
    """(screen function, problem) for ``config``; the problem is a message when the policy is invalid."""
    if not config.screening.enabled:
        return None, None
    from security.policy import Policy
    from security.screen import screen_suggestion

    problem = None
    try:
        policy = Policy.from_dict(config.screening.policy) if config.screening.policy else Policy()
    except ValueError as exc:
        problem = f"invalid screening policy ({exc}); using the default policy"
        policy = Policy()

    def screen(document: str, line: int, character: int, suggestion: str, language: str) -> Any:
        return screen_suggestion(document, line, character, suggestion, language=language, policy=policy)

    return screen, problem
