"""Telling the operators: every Guardian transition and operator action, delivered to
listeners the :class:`~routewise.Controller` calls (``ctl.subscribe(listener)``).

* :mod:`~routewise.controller.notify.base` — :class:`Notice` (a recorded transition, its log
  position and stable delivery id) and the :class:`Listener` protocol (when a listener is
  called: single-writer and shared stores).
* :mod:`~routewise.controller.notify.webhook` — :class:`WebhookNotifier`: signed JSON POSTs to
  one webhook from a background thread, with retries, a bounded queue and counters
  (``[[webhooks]]`` in ``routewise.toml``; ``/metrics`` exports the counts).
"""

from routewise.controller.notify.base import NOTICE_TYPE, Listener, Notice
from routewise.controller.notify.webhook import (
    SIGNATURE_HEADER,
    WebhookNotifier,
    WebhookStats,
    sign,
    verify,
)

__all__ = [
    "NOTICE_TYPE",
    "SIGNATURE_HEADER",
    "Listener",
    "Notice",
    "WebhookNotifier",
    "WebhookStats",
    "sign",
    "verify",
]
