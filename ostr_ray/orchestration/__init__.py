"""Ray Tune at the edge: :mod:`.spec` (CLI input -> LaunchSpec, before Ray), :mod:`.cluster` (joining Ray,
shared with retraining), :mod:`.trial` (the trainable), :mod:`.callbacks` (coordinator callback and stopper),
:mod:`.run` (fit, restore, final report) and :mod:`.status`."""
