"""The test tree mirrors the layers: every test is marked by its folder, and a unit test that asks for a
server fixture fails with a message that says to move it (tests/conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests import conftest


@dataclass
class StubItem:
    """What the guard reads of a collected test: its id, its fixtures and whether it is marked `unit`."""

    fixturenames: list[str]
    unit: bool = True
    nodeid: str = "tests/unit/test_x.py::test_y"

    def get_closest_marker(self, name: str) -> object | None:
        return object() if name == "unit" and self.unit else None


@pytest.mark.parametrize("fixture", sorted(conftest.SERVER_FIXTURES))
def test_a_unit_test_asking_for_a_server_fails_saying_to_move_it(fixture: str) -> None:
    with pytest.raises(pytest.fail.Exception, match=rf"needs {fixture}: .*move it to tests/integration"):
        conftest.pytest_runtest_setup(StubItem(["tmp_path", fixture]))  # type: ignore[arg-type]


def test_a_unit_test_without_servers_and_an_integration_test_with_them_pass_the_guard() -> None:
    conftest.pytest_runtest_setup(StubItem(["tmp_path", "monkeypatch"]))  # type: ignore[arg-type]
    conftest.pytest_runtest_setup(StubItem(["prefect_server", "gateway"], unit=False))  # type: ignore[arg-type]


def test_this_test_is_marked_by_its_folder(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("unit") is not None
    assert request.node.get_closest_marker("integration") is None
