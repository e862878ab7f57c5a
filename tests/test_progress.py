"""Progress bars are for a person at a terminal: logs and pipes get none of their output."""

import io

from datasetgan.progress import progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_draw_at_a_terminal_only_and_when_shown():
    for stream, show, drawn in ((Terminal(), True, True), (io.StringIO(), True, False), (Terminal(), False, False)):
        assert list(progress_bar(range(3), show=show, file=stream, desc="work")) == [0, 1, 2]
        assert ("work" in stream.getvalue()) == drawn, (type(stream).__name__, show)
