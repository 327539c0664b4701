"""The consoles every command prints through: reports on stdout, progress on stderr."""
from rich.console import Console

out = Console(highlight=False)
if not out.is_terminal:
    out = Console(highlight=False, width=100)  # a report in a pipe or a file keeps its columns
err = Console(stderr=True, highlight=False)


def progress(message: str) -> None:
    """A line of progress for long work, on a terminal only (pipes and CI logs stay clean)."""
    if err.is_terminal:
        err.print(f"[dim]{message}[/]")


def table(*columns, title: str | None = None, **options):
    """A report table as npa prints them: a rule under the header and no cell borders, so that
    ten columns of counters fit in 100 columns (what a pipe or a log gets)."""
    from rich import box
    from rich.table import Table

    options.setdefault("title_justify", "left")
    return Table(*columns, title=title, box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False,
                 collapse_padding=True, padding=(0, 1), **options)
