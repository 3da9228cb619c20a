"""The one way mail-tf draws and writes a figure: pyplot on the Agg backend (no display on a server
or in CI), and a tight layout saved as PNG, then closed so long runs do not pile up open figures."""


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported on first use: plotting is optional)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, dpi=110):
    """Lay `fig` out tightly, write it to `path` (PNG) and close it."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
