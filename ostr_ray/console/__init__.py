"""The rich terminal at the edge: :mod:`.format` (compact genotypes), :mod:`.progress` (one search),
:mod:`.live` (a launch's live table) and :mod:`.summary` (a launch's closing tables)."""
