"""``rtseg serve``: an HTTP inference server (FastAPI + uvicorn, ``pip install 'rtseg[serve]'``) and a browser page
for rtseg's networks. :func:`rtseg.serve.app.create_app` builds the app around loaded networks;
:func:`rtseg.serve.runner.serve` is the command: load, bind, serve, drain on SIGTERM."""
