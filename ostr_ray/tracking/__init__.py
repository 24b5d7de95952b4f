"""MLflow at the edge: :mod:`.schema` (every tag, param, metric and artifact name), :mod:`.store` (which store,
fail-fast reachability, the UI backend), :mod:`.runs` and :mod:`.trial_runs` (store operations),
:mod:`.recorder` (the launch's listener) and :mod:`.plots` (figures, cell diagrams registered per layout)."""
