"""The browser annotation studio: a local web server over one workspace and a static page.

Start it with `datasetgan annotate DIR` or `serve(Workspace.open(DIR))`.
"""

from datasetgan.annotate.server import create_app, serve

__all__ = ["create_app", "serve"]
