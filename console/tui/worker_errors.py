"""Worker failures surface in one place: the app's ``report_worker_error``.

``Worker.StateChanged`` does not bubble, so a screen that runs workers forwards its
workers' state changes to the app with this mixin; the app's single handler decides
what an error looks like (a notification and a line in the events log).

List the mixin AFTER the screen class (``class X(ModalScreen[T], ForwardWorkerErrors)``): Textual's CSS
follows each class's first DOMNode base, so listed first it hid ``Screen``/``ModalScreen`` and their
styles (a modal not centred, a screen with no background showing the main screen through it).
"""

from __future__ import annotations

from textual import on
from textual.dom import DOMNode
from textual.worker import Worker


class ForwardWorkerErrors(DOMNode):
    @on(Worker.StateChanged)
    def forward_worker_state(self, event: Worker.StateChanged) -> None:
        self.app.report_worker_error(event)  # type: ignore[attr-defined]
