"""The new-run modal: a workflow picker with each workflow's stages, then the run's inputs.

Validation is the CLI's own (``console.workflow.submit.prepare_run``, through
``intents.check_form``), field by field, so every wrong field shows its own message beside it
at once, and nothing is written unless everything is valid. Targets are optional when no stage
of the chosen workflow reads them (``baseline``: one task per box). There is no agents field:
the console's master serves the run with the console's boxes, and the run records that source.
The last values are remembered for the session (the app owns the dict). The fields scroll and
the buttons stay on screen, so the form works at 80x24.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from console.errors import FleetscanError
from console.tui import intents
from console.tui.worker_errors import ForwardWorkerErrors

FIELDS = intents.NEW_RUN_FIELDS
INPUTS = FIELDS[1:]  # every field but the workflow picker is a text box

LABELS = {"workflow": "Workflow", "targets": "Targets", "scope": "Scope", "exclude": "Exclude",
          "priority": "Priority", "max_rate": "Max rate", "host_rate": "Host rate"}
PLACEHOLDERS = {
    "targets": "e.g. 10.0.0.0/24, web.example, 10.0.0.5:8443, @hosts.txt",
    "scope": "default: the targets",
    "exclude": "addresses, ranges, hosts never contacted",
    "priority": "0 (higher runs go first)",
    "max_rate": "probes/s over the whole fleet (empty: unbounded)",
    "host_rate": "probes/s any one address receives (empty: unbounded)",
}
#: the space the title, form error and buttons take around the scrolling fields
_CHROME_ROWS = 12


@dataclass
class WorkflowsLoaded(Message):
    workflows: list[intents.WorkflowInfo]
    error: str | None = None


@dataclass
class SubmitFailed(Message):
    errors: dict[str, str]


@dataclass
class SubmitDone(Message):
    run_id: str


def stages_text(info: intents.WorkflowInfo) -> Text:
    """``alive tcp_ping ← input · ports tcp_connect ← alive``: what the workflow will do."""
    text = Text()
    if info.description:
        text.append(info.description + "\n", style="italic")
    for index, (stage, tool, source) in enumerate(info.stages):
        if index:
            text.append(" · ", style="dim")
        text.append(stage, style="bold")
        text.append(f" {tool} ", style="dim")
        text.append(f"← {source}", style="#87afd7" if source == "input" else "dim")
    return text


class NewRunScreen(ModalScreen[str | None], ForwardWorkerErrors):
    """Returns the new run's id, or None when cancelled."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "submit", "Submit"),
    ]

    def __init__(self, db_path: str | Path, workflows_file: str | Path | None, agents_source: str,
                 remembered: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.db_path = db_path
        self.workflows_file = workflows_file
        self.agents_source = agents_source
        #: the app's dict: the last values typed, kept for the next time the modal opens
        self.remembered = remembered if remembered is not None else {}
        self.infos: dict[str, intents.WorkflowInfo] = {}
        self.submitting = False

    @property
    def workflows(self) -> list[str]:
        return list(self.infos)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog new-run"):
            yield Static("[b]New run[/b]", classes="title")
            with VerticalScroll(id="new-run-fields"):
                with Horizontal(classes="field"):
                    yield Label(LABELS["workflow"], classes="field-label")
                    yield Select[str]([], prompt="loading the workflows file...", id="in-workflow")
                yield Static("", id="workflow-stages", classes="hint")
                yield Static("", id="err-workflow", classes="field-error")
                for name in INPUTS:
                    with Horizontal(classes="field"):
                        yield Label(LABELS[name], classes="field-label")
                        value = self.remembered.get(name, "0" if name == "priority" else "")
                        yield Input(value=value, placeholder=PLACEHOLDERS[name], id=f"in-{name}")
                    yield Static("", id=f"err-{name}", classes="field-error")
                yield Static(Text(f"Agents: {self.agents_source} (the console's master serves the run)",
                                  style="dim"), classes="hint")
            yield Static("", id="err-form", classes="field-error")
            with Horizontal(classes="buttons"):
                yield Button("Submit", variant="primary", id="submit")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        for name in (*FIELDS, "form"):
            self.query_one(f"#err-{name}", Static).display = False
        self._fit()
        self.query_one("#in-workflow", Select).focus()
        self.load_workflows()

    def on_resize(self, event: events.Resize) -> None:
        self._fit()

    def _fit(self) -> None:
        """The fields scroll within what the terminal leaves; Submit never leaves the screen."""
        self.query_one("#new-run-fields").styles.max_height = max(4, self.app.size.height - _CHROME_ROWS)

    @work(thread=True, name="load workflows", exit_on_error=False)
    def load_workflows(self) -> None:
        try:
            self.post_message(WorkflowsLoaded(intents.workflow_infos(self.workflows_file)))
        except FleetscanError as err:
            self.post_message(WorkflowsLoaded([], error=str(err)))

    @on(WorkflowsLoaded)
    def show_workflows(self, message: WorkflowsLoaded) -> None:
        self.infos = {info.name: info for info in message.workflows}
        picker = self.query_one("#in-workflow", Select)
        if message.error:
            picker.set_options([])
            self.query_one("#workflow-stages", Static).update("No workflows: the file has an error.")
            self.show_errors({"form": message.error})
            return
        picker.set_options((name, name) for name in self.infos)
        wanted = self.remembered.get("workflow")
        if self.infos:
            picker.value = wanted if wanted in self.infos else next(iter(self.infos))
        self._describe()

    @on(Select.Changed, "#in-workflow")
    def workflow_changed(self) -> None:
        self._describe()

    def _describe(self) -> None:
        info = self.infos.get(self.workflow)
        hint = self.query_one("#workflow-stages", Static)
        targets = self.query_one("#in-targets", Input)
        if info is None:
            hint.update("")
            return
        hint.update(stages_text(info))
        targets.placeholder = PLACEHOLDERS["targets"] if info.reads_input else \
            "optional: no stage reads targets (e.g. one task per box)"

    @property
    def workflow(self) -> str:
        value = self.query_one("#in-workflow", Select).value
        return value if isinstance(value, str) else ""

    def form(self) -> intents.NewRunForm:
        values = {name: self.query_one(f"#in-{name}", Input).value for name in INPUTS}
        return intents.NewRunForm(workflow=self.workflow, **values)

    def _remember(self) -> None:
        self.remembered.update({name: self.query_one(f"#in-{name}", Input).value for name in INPUTS})
        if self.workflow:
            self.remembered["workflow"] = self.workflow

    def clear_errors(self) -> None:
        for name in (*FIELDS, "form"):
            widget = self.query_one(f"#err-{name}", Static)
            widget.update("")
            widget.display = False
            if name != "form":
                self.query_one(f"#in-{name}").remove_class("invalid")

    def show_errors(self, errors: dict[str, str]) -> None:
        """Each field's message beside it; the first wrong field gets the focus."""
        first = None
        for field in (*FIELDS, "form"):
            if field not in errors:
                continue
            target = self.query_one(f"#err-{field}", Static)
            target.update(Text(f"✗ {errors[field]}"))
            target.display = True
            if field != "form":
                box = self.query_one(f"#in-{field}")
                box.add_class("invalid")
                first = first or box
        if first is not None:
            first.focus()
            first.scroll_visible(animate=False)

    @on(Input.Submitted)
    @on(Button.Pressed, "#submit")
    def action_submit(self) -> None:
        if self.submitting:
            return
        self.clear_errors()
        self._remember()
        self.submitting = True
        self.submit(self.form())

    @work(thread=True, exclusive=True, name="submit run", exit_on_error=False)
    def submit(self, form: intents.NewRunForm) -> None:
        try:
            run_id = intents.submit_run(self.db_path, self.workflows_file, form, agents=self.agents_source)
        except intents.FormErrors as err:
            self.post_message(SubmitFailed(err.errors))
        except FleetscanError as err:
            self.post_message(SubmitFailed({"form": str(err)}))
        else:
            self.post_message(SubmitDone(run_id))

    @on(SubmitFailed)
    def submit_failed(self, message: SubmitFailed) -> None:
        self.submitting = False
        self.show_errors(message.errors)

    @on(SubmitDone)
    def submit_done(self, message: SubmitDone) -> None:
        self.dismiss(message.run_id)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self._remember()
        self.dismiss(None)
