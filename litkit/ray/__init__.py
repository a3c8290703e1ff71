"""The same LitAPI class on Ray Serve: ``ray_app()`` (a Ray Serve application) and
``serve(backend="ray")``'s handle, ``RayServer``.

``app`` (``ray_app``: validate, cloudpickle in the caller, build the deployment), ``replica`` (the
deployment class: litkit's HTTP contract on Ray's proxy), ``sources`` (a sync generator driven from
a thread of its own, closed when the client leaves) and ``serving`` (start or join Ray, deploy with
a deadline, the handle). Ray is an optional extra (``pip install 'litkit[ray]'``): nothing here is
imported by ``import litkit``, and these modules import Ray only when used.
"""

from .app import ray_app
from .serving import RayServer, serve_on_ray

__all__ = ["ray_app", "RayServer", "serve_on_ray"]
