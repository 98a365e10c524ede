"""``make demo``'s progress line: redrawn in place on a terminal, plain lines elsewhere."""

import importlib.util
import io
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[2] / "example" / "demo.py"


@pytest.fixture(scope="module")
def demo():
    """example/demo.py as a module; importing it sets up nothing (main() does)."""
    spec = importlib.util.spec_from_file_location("fullctl_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeStream(io.StringIO):
    """A text stream that says whether it is a terminal, and counts its flushes."""

    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty
        self.flushes = 0

    def isatty(self) -> bool:
        return self.tty

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


class BareStream:
    """Only write() and flush(): a stream that cannot say it is a terminal."""

    def __init__(self):
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass

    def getvalue(self) -> str:
        return self.text


def show(demo, stream, counts, total=3):
    line = demo.ProgressLine(total, stream)
    for done in counts:
        line.update(done)
    line.close()
    return stream.getvalue()


def test_terminal_gets_one_redrawn_line(demo):
    stream = FakeStream(tty=True)
    output = show(demo, stream, [0, 0, 1, 1, 3])
    assert output == "\r0/3 tasks finished\r1/3 tasks finished\r3/3 tasks finished\n"
    assert stream.flushes >= 3  # each redraw shows at once


@pytest.mark.parametrize(
    "stream", [FakeStream(tty=False), BareStream()], ids=["not-a-tty", "no-isatty"]
)
def test_pipe_or_file_gets_plain_lines(demo, stream):
    output = show(demo, stream, [0, 0, 1, 1, 3])
    assert "\r" not in output
    assert output.splitlines() == ["0/3 tasks finished", "1/3 tasks finished", "3/3 tasks finished"]
    assert output.endswith("\n")


def test_stdout_is_the_default(demo, monkeypatch):
    stream = FakeStream(tty=False)
    monkeypatch.setattr(sys, "stdout", stream)
    line = demo.ProgressLine(3)
    line.update(2)
    line.close()
    assert stream.getvalue() == "2/3 tasks finished\n"


def test_importing_the_demo_sets_nothing_up(demo):
    """The Django setup and the example's models are main()'s business, not the import's."""
    assert callable(demo.setup_django)
    assert not hasattr(demo, "SumTask")
