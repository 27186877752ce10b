# Jupyter Server settings of the workcell sandbox image, installed as /etc/jupyter/jupyter_server_config.py (a
# system-wide config path of jupyter-core) by post-install.sh. sandboxd starts the server inside the sandbox for
# run_code and for people; nothing outside the sandbox reaches it except through sandboxd and the orchestrator,
# which check their own credentials. What differs per job comes from whoever launches the server, never from here:
#   token      JUPYTER_TOKEN in the environment (or --ServerApp.token=...): no token is baked into the image, and
#              without one the server makes up a random token that nobody else knows. This file moves it from the
#              environment into the settings, so that kernels do not inherit it
#   listen     --ip=127.0.0.1 --port=8888, or --sock=PATH (a unix socket)
#   base_url   --ServerApp.base_url=/jobs/<id>/jupyter/ when served under the orchestrator's prefix
#   root_dir   --ServerApp.root_dir=/workspace (the default is the working directory)
# This file must not start anything, read files or listen anywhere; it only sets defaults and patches one handler.

import importlib.util
import os

c = get_config()  # noqa: F821 (defined by traitlets when it runs this file)

# The token from JUPYTER_TOKEN, taken out of the environment: kernels inherit the server's environment, and the
# agent's code printing os.environ must not put the server's credential into its output (and the job's record).
if os.environ.get("JUPYTER_TOKEN"):
    c.ServerApp.token = os.environ.pop("JUPYTER_TOKEN")

c.ServerApp.open_browser = False
# Behind the orchestrator's proxy the Host header names the orchestrator, not localhost, and jupyter-server would
# refuse every proxied request (403, its DNS-rebinding check). Where the server listens is still the launcher's
# choice: in the sandbox that is loopback or a unix socket, so nothing outside the sandbox can connect.
c.ServerApp.allow_remote_access = True
# The proxy says which scheme and client the request had (X-Scheme, X-Real-Ip): URLs and logs then match it.
c.ServerApp.trust_xheaders = True
# Deleting a file from the Jupyter UI moves it to a .Trash-1000 folder at the top of /workspace by default, which
# would then land in the job's output.zip: delete for real.
c.FileContentsManager.delete_to_trash = False
# /jobs/<id>/jupyter/ opens the classic notebook's file browser (nbclassic, a server extension) rather than the
# server's bare landing page; without nbclassic the default stays.
if importlib.util.find_spec("nbclassic") is not None:
    c.ServerApp.default_url = "/tree"


def _enable_tcp_nodelay_on_kernel_websockets():
    """jupyter-server 1.23 never sets TCP_NODELAY on the kernel channels websocket: each execute's small replies wait
    out Nagle's algorithm against the client's delayed ACK, about 47 ms per execute; with TCP_NODELAY about 5 ms
    (measured, docs DESIGN.md section 9). Patch the handler's open() to turn it on for every connection."""
    handlers = []
    try:  # jupyter-server 1.x
        from jupyter_server.services.kernels.handlers import ZMQChannelsHandler

        handlers.append(ZMQChannelsHandler)
    except ImportError:
        pass
    try:  # jupyter-server 2.x moved the handler
        from jupyter_server.services.kernels.websocket import KernelWebsocketHandler

        handlers.append(KernelWebsocketHandler)
    except ImportError:
        pass
    for handler in handlers:
        original_open = handler.open
        if getattr(original_open, "workcell_nodelay", False):
            continue

        def open_with_nodelay(self, *args, _original_open=original_open, **kwargs):
            self.set_nodelay(True)
            return _original_open(self, *args, **kwargs)

        open_with_nodelay.workcell_nodelay = True
        handler.open = open_with_nodelay


_enable_tcp_nodelay_on_kernel_websockets()
