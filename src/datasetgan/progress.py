"""Progress bars: shown to a person at a terminal, silent in logs, pipes and CI output."""

from collections.abc import Iterable

from tqdm import tqdm


def progress_bar(iterable: Iterable | None = None, *, show: bool = True, **kwargs) -> tqdm:
    """tqdm that draws only when asked to and when its stream is a terminal (disable=None)."""
    return tqdm(iterable, disable=None if show else True, dynamic_ncols=True, **kwargs)
