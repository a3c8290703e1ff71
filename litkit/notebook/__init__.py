"""The notebook front: the ipywidgets dashboard (``dashboard``) and the HTML it shows, rendered from
the server's status snapshots (``formatting``, stdlib only). The server imports
``litkit.notebook.dashboard``, and so ipywidgets, only when a dashboard is asked for.
"""
