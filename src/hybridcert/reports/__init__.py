"""Tables, plots and Markdown reports of certification results."""
