"""Annotations: a model's outputs beside every step of a dataset (`lab2048 annotate`), read
back verified (`open_annotations`) by the viewer (`lab2048 view`, lab2048.viewer).

    from lab2048.annotate.files import open_annotations
    ann = open_annotations("runs/d3")                 # refuses stale or mismatched files
    ann.policy[0]["move_probs"], ann.value[0]["q"], ann.manifest["gamma"]

`annotate.run` (the command) imports torch; `annotate.files` and `annotate.config` do not.
"""
