"""What a person looks at or types into: plots, report figures, widgets, the notebook helpers (``lab``) and the
command line (``cli``). Views import the runners and the science; nothing imports a view but another view."""
