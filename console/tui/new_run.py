"""The new-run modal: workflow, targets, scope, agents, priority, validated before any write.

Validation is the CLI's own (``console.workflow.submit.prepare_run`` via ``intents.submit_run``):
a bad target, an empty target list, an unknown workflow or a bad agents source comes
back as a ``BadInput`` naming its field, and the error is shown under that field.
Nothing is written unless everything is valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Button, Input, Label, Static

from console.errors import BadInput, FleetscanError
from console.tui import intents
from console.tui.worker_errors import ForwardWorkerErrors

FIELDS = ("workflow", "targets", "scope", "agents", "priority")

PLACEHOLDERS = {
    "workflow": "workflow name",
    "targets": "e.g. 10.0.0.0/24, web.example, 10.0.0.5:8443, @hosts.txt",
    "scope": "default: the targets",
    "agents": "local, local:N, or an inventory file",
    "priority": "0",
}


@dataclass
class WorkflowsLoaded(Message):
    names: list[str]
    error: str | None = None


@dataclass
class SubmitFailed(Message):
    field: str | None
    message: str


@dataclass
class SubmitDone(Message):
    run_id: str


def field_of(error: BadInput) -> str | None:
    """Which input an error belongs to (``--targets`` and ``targets`` alike); None: the form's."""
    if error.file is not None:  # a workflows/inventory/@targets file is wrong: the whole message matters
        return None
    name = (error.field or "").lstrip("-").split(".")[0].split("[")[0]
    return name if name in FIELDS else None


class NewRunScreen(ForwardWorkerErrors, ModalScreen[str | None]):
    """Returns the new run's id, or None when cancelled."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "submit", "Submit"),
    ]

    def __init__(self, db_path: str | Path, workflows_file: str | Path | None, agents_source: str,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.db_path = db_path
        self.workflows_file = workflows_file
        self.agents_source = agents_source
        self.workflows: list[str] = []
        self.submitting = False

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog new-run"):
            yield Static("[b]New run[/b]", classes="title")
            for name in FIELDS:
                with Horizontal(classes="field"):
                    yield Label(name.capitalize(), classes="field-label")
                    value = {"agents": self.agents_source, "priority": "0"}.get(name, "")
                    yield Input(value=value, placeholder=PLACEHOLDERS[name], id=f"in-{name}")
                yield Static("", id=f"err-{name}", classes="field-error")
            yield Static("Loading the workflows file...", id="workflow-list", classes="hint")
            yield Static("", id="err-form", classes="field-error")
            with Horizontal(classes="buttons"):
                yield Button("Submit", variant="primary", id="submit")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        for name in FIELDS:
            self.query_one(f"#err-{name}", Static).display = False
        self.query_one("#err-form", Static).display = False
        self.query_one("#in-workflow", Input).focus()
        self.load_workflows()

    @work(thread=True, name="load workflows", exit_on_error=False)
    def load_workflows(self) -> None:
        try:
            self.post_message(WorkflowsLoaded(intents.workflow_names(self.workflows_file)))
        except FleetscanError as err:
            self.post_message(WorkflowsLoaded([], error=str(err)))

    @on(WorkflowsLoaded)
    def show_workflows(self, message: WorkflowsLoaded) -> None:
        self.workflows = message.names
        box = self.query_one("#in-workflow", Input)
        box.suggester = SuggestFromList(message.names, case_sensitive=True)
        if message.error:
            self.query_one("#workflow-list", Static).update("No workflows: the file has an error.")
            self.show_error(None, message.error)
        elif message.names:
            self.query_one("#workflow-list", Static).update("Workflows: " + ", ".join(message.names))
            if not box.value:
                box.value = message.names[0]

    def form(self) -> intents.NewRunForm:
        values = {name: self.query_one(f"#in-{name}", Input).value for name in FIELDS}
        return intents.NewRunForm(**values)

    def clear_errors(self) -> None:
        for name in (*FIELDS, "form"):
            widget = self.query_one(f"#err-{name}", Static)
            widget.update("")
            widget.display = False
            if name != "form":
                self.query_one(f"#in-{name}", Input).remove_class("invalid")

    def show_error(self, field: str | None, message: str) -> None:
        target = self.query_one(f"#err-{field or 'form'}", Static)
        target.update(f"✗ {message}")
        target.display = True
        if field:
            box = self.query_one(f"#in-{field}", Input)
            box.add_class("invalid")
            box.focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#submit")
    def action_submit(self) -> None:
        if self.submitting:
            return
        self.clear_errors()
        form = self.form()
        workflow = form.workflow.strip()
        if self.workflows and workflow and workflow not in self.workflows:
            self.show_error("workflow", f"unknown workflow {workflow!r} (known: {', '.join(self.workflows)})")
            return
        self.submitting = True
        self.submit(form)

    @work(thread=True, exclusive=True, name="submit run", exit_on_error=False)
    def submit(self, form: intents.NewRunForm) -> None:
        try:
            run_id = intents.submit_run(self.db_path, self.workflows_file, form)
        except BadInput as err:
            self.post_message(SubmitFailed(field_of(err), err.message if field_of(err) else str(err)))
        except FleetscanError as err:
            self.post_message(SubmitFailed(None, str(err)))
        else:
            self.post_message(SubmitDone(run_id))

    @on(SubmitFailed)
    def submit_failed(self, message: SubmitFailed) -> None:
        self.submitting = False
        self.show_error(message.field, message.message)

    @on(SubmitDone)
    def submit_done(self, message: SubmitDone) -> None:
        self.dismiss(message.run_id)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
