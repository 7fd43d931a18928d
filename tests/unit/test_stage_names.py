"""One name per stage: every Prefect task of `tasks/` is named after its function, in kebab-case, and
`flows/` hold flows only (their tasks live in `tasks/`).

Pure: imports the modules and reads the task objects; no server."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest
from prefect import Flow, Task

import flows
import tasks


def modules(package: ModuleType) -> list[ModuleType]:
    names = [info.name for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")]
    return [importlib.import_module(name) for name in names]


def defined_here(module: ModuleType, kind: type) -> list[tuple[str, object]]:
    """The `kind` objects a module defines itself (not those it imports)."""
    return [
        (name, value)
        for name, value in vars(module).items()
        if isinstance(value, kind) and getattr(value.fn, "__module__", None) == module.__name__  # type: ignore[attr-defined]
    ]


TASKS = [
    (module.__name__, name, value) for module in modules(tasks) for name, value in defined_here(module, Task)
]


def test_the_stages_are_all_found() -> None:
    """The walk finds the pipeline's tasks (a walk that finds nothing would pass every test below)."""
    found = {task.name for _, _, task in TASKS}
    assert {"spool-campaign", "estimate-campaign-cost", "plan-batches", "plan-resend", "send-batch"} <= found


@pytest.mark.parametrize(("module", "name", "task"), TASKS, ids=[f"{m}.{n}" for m, n, _ in TASKS])
def test_a_task_is_named_after_its_function(module: str, name: str, task: Task) -> None:  # type: ignore[type-arg]
    """`@task(name=...)` is the function's name in kebab-case, and the module name binds the same function."""
    assert task.name == task.fn.__name__.replace("_", "-") and name == task.fn.__name__, module


@pytest.mark.parametrize("module", modules(flows), ids=lambda m: m.__name__)
def test_flows_hold_flows_only(module: ModuleType) -> None:
    """No task is defined in `flows/`, and every function a flow module defines is a flow."""
    assert defined_here(module, Task) == []
    functions = [
        name for name, value in vars(module).items()
        if inspect.isfunction(value) and value.__module__ == module.__name__
    ]
    assert functions == [], f"{module.__name__} defines plain functions {functions}: move them to tasks/"
    assert defined_here(module, Flow)
