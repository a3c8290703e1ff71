"""The notebook front: the ipywidgets dashboard (``dashboard``), its Stop and Cancel buttons drawn by
the browser (``controls``, an anywidget that calls the server's control paths over HTTP; optional),
its charts drawn by the browser (``charts``, an anywidget; optional) from plain figures
(``figures``, stdlib only), and the HTML it shows, rendered from the server's status snapshots
(``formatting``, stdlib only). The server imports
``litkit.notebook.dashboard``, and so ipywidgets, only when a dashboard is asked for; Ray Serve's
handle (``litkit.ray.RayServer``) likewise imports ``ray_dashboard``, its live view over
``serve.status()``.
"""
