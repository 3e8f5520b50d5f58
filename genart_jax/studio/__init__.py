"""genart studio: a local web page over a run's files and the feedback session's steering code.

`genart studio --workdir W` serves the page (server.py) over the Studio (app.py), which holds no
feedback logic of its own: ratings, refits and rounds are `feedback.FeedbackSession`'s, written
to the same WORKDIR/feedback/ files as `genart feedback`. controls.py turns the page's sliders
into latents and labels, render.py turns latents into PNGs, run_files.py reads the run's files.
"""

from genart_jax.studio.app import Studio, StudioConflict, StudioError

__all__ = ["Studio", "StudioConflict", "StudioError"]
